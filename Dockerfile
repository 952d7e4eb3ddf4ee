# syntax=docker/dockerfile:1
# Build in the Rust image, run as a non-root user in a small image with the binary alone.
# Both stages are Debian 12 (bookworm), so the binary finds the C library it was linked
# against. The Rust version meets Cargo.toml's rust-version, which the lockfile sets.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
# Cargo.toml names benches/route_lookup.rs, which cargo looks for even with --bin, and the
# demo includes examples/demo.yaml.
COPY benches benches
COPY examples examples
# The caches outlive the build, so a change in src/ recompiles the crate alone.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
    && cp target/release/portcullis /portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /portcullis /usr/local/bin/portcullis
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis"]
