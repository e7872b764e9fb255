# The bandit CLI (simulator, bootstrap, evaluate). Build from the repository root:
#   docker build -f docker/client.Dockerfile .
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p bandit

FROM debian:bookworm-slim
# librdkafka and the registry client use the system's OpenSSL (TLS, SASL SCRAM).
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/bandit /usr/local/bin/bandit
RUN useradd --system --create-home bandit
USER bandit
WORKDIR /home/bandit
ENTRYPOINT ["bandit"]
