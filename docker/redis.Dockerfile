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
COPY docker/redis-entrypoint.sh /usr/local/bin/redis-entrypoint.sh
# Debian's package runs Redis as the unprivileged user `redis`.
RUN mkdir -p /data && chown redis:redis /data
USER redis
EXPOSE 6379
VOLUME /data
# The same module load line as scripts/demo, behind a required password
# (REDIS_PASSWORD or REDIS_PASSWORD_FILE); module settings can follow as
# --bandit.<name> value.
ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]
