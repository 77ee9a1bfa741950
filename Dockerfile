FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
# Cargo.toml declares a [[bench]]; the manifest does not load without its file.
COPY benches benches
RUN cargo build --release --locked --bin gracegate

# cc: glibc and libgcc_s for the Rust binary; TLS is rustls, so no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/gracegate /usr/local/bin/gracegate
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/gracegate"]
CMD ["serve"]
