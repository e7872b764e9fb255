# The bandit CLI (simulator, bootstrap, evaluate). Build from the repository root:
#   docker build -f docker/client.Dockerfile .
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p bandit

FROM debian:bookworm-slim
COPY --from=build /src/target/release/bandit /usr/local/bin/bandit
RUN useradd --system --create-home bandit
USER bandit
WORKDIR /home/bandit
ENTRYPOINT ["bandit"]
