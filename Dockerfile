# berth's container image: the berth binary, the glibc libraries it loads, CA certificates
# and a non-root user on an empty (scratch) base. See "Running berth" in README.md.
#
#   docker build -t berth .                       # compiles berth in the Rust image
#   podman build --format docker -t berth .       # the same (--format docker keeps HEALTHCHECK)
#
# Without access to a registry for the Rust image, build the binary on a Debian 12 host and
# assemble the root filesystem there; only the `prebuilt` stage is then used, and no image
# is pulled (BuildKit and podman/buildah skip unused stages; Docker's legacy builder does not):
#
#   cargo build --release --locked
#   deploy/docker/rootfs.sh target/release/berth target/docker-rootfs
#   podman build --format docker --build-arg ROOTFS=prebuilt -t berth .

# The image berth is compiled in. Its Debian release decides the glibc the image carries.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
# Where the root filesystem comes from: `compiled` (built here, the default) or `prebuilt`
# (assembled on the host into target/docker-rootfs/ by deploy/docker/rootfs.sh). The default
# is given in the FROM line below, not here: buildah before 1.29 (podman 4.3, Debian 12's)
# leaves an ARG's default out when it works out which stages the build needs.
ARG ROOTFS

FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin berth \
    && deploy/docker/rootfs.sh target/release/berth /rootfs

FROM scratch AS prebuilt
COPY target/docker-rootfs/ /rootfs/

FROM ${ROOTFS:-compiled} AS rootfs

FROM scratch
COPY --from=rootfs /rootfs/ /
# A COPY from the build context makes every file root's: the data dir is given to the berth
# user here, whichever stage it came from (/var/lib holds only berth/).
COPY --from=rootfs --chown=65532:65532 /rootfs/var/lib/ /var/lib/
USER 65532:65532
WORKDIR /var/lib/berth
VOLUME ["/var/lib/berth"]
# /etc/berth/config.yaml: addr 0.0.0.0:5000, data_dir /var/lib/berth; BERTH_* variables
# override it.
EXPOSE 5000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/berth", "health", "--config", "/etc/berth/config.yaml"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve", "--config", "/etc/berth/config.yaml"]
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="A container image registry: OCI Distribution v1.1 in one binary" \
      org.opencontainers.image.licenses="Apache-2.0"
