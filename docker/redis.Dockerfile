# Redis 7 with the bandit module. Build from the repository root:
#   docker build -f docker/redis.Dockerfile .
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p bandit-redis

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/libbandit_redis.so /usr/lib/redis/modules/libbandit_redis.so
EXPOSE 6379
VOLUME /data
# The same module load line as scripts/demo; module arguments go after the path.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", "--appendonly", "yes", \
     "--loadmodule", "/usr/lib/redis/modules/libbandit_redis.so"]
