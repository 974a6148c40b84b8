#!/usr/bin/env bash
# Builds the four packages into target/packages/:
#   telltale-agent and telltale-aggregator, each as .deb (cargo-deb) and .rpm (cargo-generate-rpm),
# from the metadata in agent/Cargo.toml, aggregator/Cargo.toml and the files in packaging/.
# The version is the workspace's; `--version V` overrides it (used by the upgrade test).
# Binaries are built with the release profile (stripped, full LTO).
set -euo pipefail
cd "$(dirname "$0")/.."

version=""
if [ "${1:-}" = "--version" ]; then
    version="${2:?--version needs a value}"
fi

for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing $tool from crates.io" >&2
        cargo install --locked --quiet "$tool"
    fi
done

cargo build --release --locked -p telltale-agent -p telltale-aggregator
# Man pages and shell completions, generated from the binaries' own clap definitions
# (so they cannot drift from the flags) into packaging/generated/, which the packages' asset
# lists name.
bin_dir="${CARGO_TARGET_DIR:-target}/release"
gen=packaging/generated
rm -rf "$gen" && mkdir -p "$gen"
for p in agent aggregator; do
    b="$bin_dir/telltale-$p"
    "$b" man | gzip -9n > "$gen/telltale-$p.1.gz"
    "$b" completions bash > "$gen/telltale-$p.bash"
    "$b" completions zsh > "$gen/_telltale-$p"
    "$b" completions fish > "$gen/telltale-$p.fish"
done
out=target/packages
mkdir -p "$out"
for p in agent aggregator; do
    deb_args=()
    rpm_args=()
    if [ -n "$version" ]; then
        deb_args=(--deb-version "$version")
        rpm_args=(--set-metadata "version = \"$version\"")
    fi
    cargo deb --no-build --locked -p "telltale-$p" -o "$out/" "${deb_args[@]}"
    cargo generate-rpm -p "$p" -o "$out/" "${rpm_args[@]}"
done
ls -1 "$out"
