# bandit-sink and bandit-join. Build from the repository root:
#   docker build -f docker/sink.Dockerfile .
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p bandit-sink

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/bandit-sink /usr/local/bin/bandit-sink
# The learning loop's join, from the same crate (compose's join service).
COPY --from=build /src/target/release/bandit-join /usr/local/bin/bandit-join
COPY docker/sink.toml /etc/bandit/sink.toml
RUN useradd --system --no-create-home bandit
USER bandit
EXPOSE 9464
ENTRYPOINT ["bandit-sink", "--config", "/etc/bandit/sink.toml"]
