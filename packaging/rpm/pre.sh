# The service user: a system account with no login shell, home in the state directory.
getent group telltale >/dev/null || groupadd -r telltale
getent passwd telltale >/dev/null || useradd -r -g telltale -d /var/lib/telltale -M \
    -s /sbin/nologin -c "Telltale monitoring" telltale
exit 0
