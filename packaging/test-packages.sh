#!/usr/bin/env bash
# Installs, checks, upgrades, removes and purges the packages on this machine (as root; systemd
# need not run), and inspects the .rpms. Run by tests/tests/packages.rs in CI. It changes the
# system (a user, files under /usr, /etc, /var/lib) and purges everything it installed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/packages
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; "$@" || fail "$what"; echo "ok: $what"; }
mode_owner() { stat -c '%a %U:%G' "$1"; }
http_get() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }

[ "$(id -u)" = 0 ] || fail "must run as root"
dpkg -P telltale-agent telltale-aggregator >/dev/null 2>&1 || true

# Whatever happens, leave the machine as it was: stop the daemons this run started, purge the
# packages and remove the certificates it placed (a failed run must not fail the next one).
placed_tls=""
cleanup() { pkill -u telltale telltale- 2>/dev/null || true; }
leave_clean() {
    cleanup
    dpkg -P telltale-agent telltale-aggregator >/dev/null 2>&1 || true
    if [ -n "$placed_tls" ]; then rm -rf /etc/telltale/tls; fi
    rmdir /etc/telltale /var/lib/telltale 2>/dev/null || true
}
trap leave_clean EXIT

packaging/build.sh
agent_deb=$(ls $out/telltale-agent_*_amd64.deb | grep -v '+' | head -1)
agg_deb=$(ls $out/telltale-aggregator_*_amd64.deb | grep -v '+' | head -1)
agent_rpm=$(ls $out/telltale-agent-*.rpm | head -1)
agg_rpm=$(ls $out/telltale-aggregator-*.rpm | head -1)

echo "== install"
dpkg -i "$agent_deb" "$agg_deb"
for p in agent aggregator; do
    check "/usr/bin/telltale-$p is 755 root" test "$(mode_owner /usr/bin/telltale-$p)" = "755 root:root"
    check "man telltale-$p is installed and reads" sh -c "zcat /usr/share/man/man1/telltale-$p.1.gz | grep -q '^.TH telltale-$p 1'"
    check "bash completion for telltale-$p" sh -c "grep -q telltale-$p /usr/share/bash-completion/completions/telltale-$p"
    check "zsh and fish completions for telltale-$p" test -s /usr/share/zsh/vendor-completions/_telltale-$p -a -s /usr/share/fish/vendor_completions.d/telltale-$p.fish
    check "the licence ships" test -s /usr/share/doc/telltale-$p/LICENSE
    check "/etc/telltale/$p.toml is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' telltale-$p | grep -q /etc/telltale/$p.toml"
    check "unit installed" test -f /usr/lib/systemd/system/telltale-$p.service
    check "unit enabled" test -L /etc/systemd/system/multi-user.target.wants/telltale-$p.service
    score=$(systemd-analyze security --offline=true /usr/lib/systemd/system/telltale-$p.service 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    check "unit exposure $score is at most 2.0 (systemd-analyze security)" python3 -c "import sys; sys.exit(0 if 0 < float('$score' or 0) <= 2.0 else 1)"
    check "unit restarts on upgrade" grep -q "try-restart telltale-$p.service" /var/lib/dpkg/info/telltale-$p.postinst
    check "--version" sh -c "/usr/bin/telltale-$p --version | grep -q '$(dpkg-query -W -f='${Version}' telltale-$p | cut -d- -f1 | cut -d+ -f1)'"
done
check "user telltale has no login shell" sh -c "getent passwd telltale | grep -q ':/var/lib/telltale:/usr/sbin/nologin$'"
check "user telltale is a system user" test "$(id -u telltale)" -lt 1000
check "/var/lib/telltale is 750 telltale" test "$(mode_owner /var/lib/telltale)" = "750 telltale:telltale"
check "/etc/telltale/tls is 750 root:telltale" test "$(mode_owner /etc/telltale/tls)" = "750 root:telltale"

echo "== refuses to start without certificates (the unit's ExecStartPre)"
set +e
msg=$(runuser -u telltale -- /usr/bin/telltale-agent check-config --config /etc/telltale/agent.toml 2>&1); rc=$?
set -e
check "agent check-config exits 2 without certificates" test "$rc" = 2
check "and names the missing file" sh -c "echo '$msg' | grep -q /etc/telltale/tls/"

echo "== enroll: CA and server certificate, the agent's certificate as its three files"
host=$(hostname)
/usr/bin/telltale-aggregator certs init --dir /etc/telltale/tls
placed_tls=1
/usr/bin/telltale-aggregator certs issue --dir /etc/telltale/tls --agent "$host"
install -o root -g telltale -m 0640 "/etc/telltale/tls/agents/$host.crt" /etc/telltale/tls/agent.crt
install -o root -g telltale -m 0640 "/etc/telltale/tls/agents/$host.key" /etc/telltale/tls/agent.key
chgrp telltale /etc/telltale/tls/server.key /etc/telltale/tls/ca.crt /etc/telltale/tls/server.crt
chmod 0640 /etc/telltale/tls/server.key
check "aggregator check-config passes as telltale" runuser -u telltale -- /usr/bin/telltale-aggregator check-config --config /etc/telltale/aggregator.toml
check "agent check-config passes as telltale" runuser -u telltale -- /usr/bin/telltale-agent check-config --config /etc/telltale/agent.toml

echo "== run both as the unit's ExecStart does, as telltale"
runuser -u telltale -- /usr/bin/telltale-aggregator serve --config /etc/telltale/aggregator.toml >/tmp/tt-pkg-agg.log 2>&1 &
agg_pid=$!
sleep 1
runuser -u telltale -- /usr/bin/telltale-agent run --config /etc/telltale/agent.toml >/tmp/tt-pkg-agent.log 2>&1 &
agent_pid=$!
ok=""
for _ in $(seq 1 40); do
    if http_get "http://127.0.0.1:9470/api/v1/query?query=up%7Binstance%3D%22$host%22%7D" 2>/dev/null | grep -q '"1"\]'; then ok=1; break; fi
    sleep 0.5
done
[ -n "$ok" ] || { cat /tmp/tt-pkg-agg.log /tmp/tt-pkg-agent.log; fail "the installed agent never reached the installed aggregator"; }
echo "ok: the installed agent ships to the installed aggregator"
# By user, not "the first process of that name": another copy may run on a shared machine.
check "aggregator runs as telltale" sh -c 'pgrep -u telltale -f "^/usr/bin/telltale-aggregator " >/dev/null'
check "agent runs as telltale" sh -c 'pgrep -u telltale -f "^/usr/bin/telltale-agent " >/dev/null'
check "agent state is owned by telltale" test "$(stat -c %U /var/lib/telltale/agent)" = telltale
check "aggregator state is owned by telltale" test "$(stat -c %U /var/lib/telltale/aggregator)" = telltale
check "aggregator's sysctl file installed" grep -q "^net.core.rmem_max = 33554432" /usr/lib/sysctl.d/60-telltale-aggregator.conf
cleanup
wait "$agg_pid" "$agent_pid" 2>/dev/null || true

echo "== upgrade keeps an edited config"
echo '# edited by the operator' >> /etc/telltale/agent.toml
packaging/build.sh --version 0.1.0+upgrade1 >/dev/null
dpkg -i $out/telltale-agent_0.1.0+upgrade1_amd64.deb
check "upgraded" test "$(dpkg-query -W -f='${Version}' telltale-agent)" = "0.1.0+upgrade1"
check "the edit is kept" grep -q '^# edited by the operator$' /etc/telltale/agent.toml

echo "== remove keeps config and data, purge removes them"
dpkg -r telltale-agent
check "binary removed" test ! -e /usr/bin/telltale-agent
check "config kept on remove" test -f /etc/telltale/agent.toml
check "data kept on remove" test -d /var/lib/telltale/agent
dpkg -P telltale-agent
check "config removed on purge" test ! -e /etc/telltale/agent.toml
check "data removed on purge" test ! -e /var/lib/telltale/agent
dpkg -P telltale-aggregator
check "aggregator config removed on purge" test ! -e /etc/telltale/aggregator.toml
check "aggregator data removed on purge" test ! -e /var/lib/telltale/aggregator
rm -rf /etc/telltale/tls   # the certificates this test placed (operators' are left alone)
rmdir /etc/telltale /var/lib/telltale 2>/dev/null || true

echo "== rpm"
for r in "$agent_rpm" "$agg_rpm"; do
    p=$(rpm -qp --qf '%{NAME}' "$r")
    check "$p lists its files" sh -c "rpm -qpl '$r' | grep -q '^/usr/bin/$p$'"
    check "$p marks its config" sh -c "rpm -qpc '$r' | grep -q '^/etc/telltale/${p#telltale-}.toml$'"
    check "$p config is noreplace" sh -c "rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' '$r' | grep -q '^/etc/telltale/.* cn'"
    check "$p creates the user" sh -c "rpm -qp --scripts '$r' | grep -q 'useradd -r -g telltale'"
    check "$p has the unit" sh -c "rpm -qpl '$r' | grep -q '/usr/lib/systemd/system/$p.service'"
    check "$p has its man page and completions" sh -c "rpm -qpl '$r' | grep -q '^/usr/share/man/man1/$p.1.gz$' && rpm -qpl '$r' | grep -q '^/usr/share/bash-completion/completions/$p$'"
    root=$(mktemp -d)
    # --noscripts: the scratch root has no shell to run scriptlets in.
    rpm --root "$root" --nodeps --noscripts -i "$r"
    check "$p installs into a scratch root" test -x "$root/usr/bin/$p"
    rm -rf "$root"
done
echo "all package checks passed"
