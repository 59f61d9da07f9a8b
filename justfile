# duet's recipes; CI runs `.ci/run`: `fmt-check`, `clippy`, `test`, schemathesis, `check-deploy`, `bench-smoke`, `check-images` and `fuzz --smoke`, in that order.

# Run duet on one machine: the locator with an embedded edge on SQLite.
run:
    cargo run --release -p duet-locator

# Every test, on SQLite, PostgreSQL and MariaDB (starts the servers if they are down).
test *args:
    scripts/test {{args}}

fmt:
    cargo fmt --all

fmt-check:
    cargo fmt --all -- --check

clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs.
ci:
    .ci/run

# Regenerate the golden protocol fixtures after a deliberate protocol change.
bless:
    DUET_BLESS=1 cargo test -p duet-proto --test golden

# Benchmarks (placement and outbox on SQLite and PostgreSQL, failover detection, media forwarding, the echo floor against fastwebsockets, idle scale, fan-out, slow consumers and many small sessions against NATS, instructions per message under callgrind); writes docs/benchmarks.md (`just bench fanout`).
bench *args:
    scripts/bench {{args}}

# Fuzz every protocol decoder, 60 s a target on nightly (`just fuzz --smoke`: 10 s each; `--seconds N`).
fuzz *args:
    scripts/fuzz {{args}}

# Each benchmark scenario once, briefly: checks everything works and writes nothing (what CI runs).
bench-smoke:
    scripts/bench --smoke

# Build the container images with buildah (FROM scratch; `--output DIR` also writes OCI archives).
images *args:
    deploy/container/build {{args}}

# Build the images and run them from their own filesystem as an arbitrary UID (root; what CI runs).
check-images:
    scripts/check-images

# Render every kustomization and validate it, the compose file and the Grafana dashboard.
check-deploy:
    scripts/check-deploy
