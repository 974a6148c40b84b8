install -d -o telltale -g telltale -m 0750 /var/lib/telltale
# The QUIC socket's receive buffer limit (a container may not allow it: not an error).
sysctl -q -p /usr/lib/sysctl.d/60-telltale-aggregator.conf >/dev/null 2>&1 || true
install -d -o root -g telltale -m 0750 /etc/telltale/tls
# Enabled on first install (not started: certificates first), per the distribution's presets.
if [ $1 -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload preset telltale-aggregator.service >/dev/null 2>&1 || :
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
