# On erase (not upgrade): stop and disable. Data in /var/lib/telltale is kept.
if [ $1 -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now telltale-agent.service >/dev/null 2>&1 || :
fi
exit 0
