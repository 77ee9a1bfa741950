# Multi-arch (`make image-push`, buildx): each platform builds natively in its own builder
# stage, so `uname -m` is the image's architecture (x86_64 or aarch64).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The waiter is static (musl): it is copied into application images of any kind.
RUN rustup target add "$(uname -m)-unknown-linux-musl"
COPY Cargo.toml Cargo.lock ./
COPY src src
# Cargo.toml declares a [[bench]]; the manifest does not load without its file.
COPY benches benches
# The workspace member: the manifest does not load without it either.
COPY waiter waiter
RUN cargo build --release --locked --bin gracegate
# ring's C and assembly build with the image's gcc for the musl target (see the Makefile's
# `waiter` target); the `waiter` profile is size-tuned and stripped.
RUN target="$(uname -m)-unknown-linux-musl" \
 && env "CC_$(uname -m)_unknown_linux_musl=gcc" \
      cargo build --locked -p gracegate-wait --profile waiter --target "$target" \
 && cp "target/$target/waiter/gracegate-wait" /gracegate-wait

# cc: glibc and libgcc_s for the Rust binary; TLS is rustls, so no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/gracegate /usr/local/bin/gracegate
# The drain-wait waiter: the init container of opted-in pods runs
# `/usr/local/bin/gracegate-wait install /.gracegate/gracegate-wait`.
COPY --from=builder /gracegate-wait /usr/local/bin/gracegate-wait
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/gracegate"]
CMD ["serve"]
