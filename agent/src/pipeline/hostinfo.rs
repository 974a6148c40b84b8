//! Host metadata for enrichment: operating system, kernel, architecture, and container or
//! cloud hints where they are cheap to read (files only: no metadata-service calls, which
//! would hang on hosts without one). Read once at start-up.

use std::path::Path;

/// What the agent knows about its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `ID` from os-release (`debian`, `rhel`, ...).
    pub os: String,
    /// `VERSION_ID` from os-release.
    pub os_version: String,
    /// The running kernel's release.
    pub kernel: String,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// `docker`, `podman`, `kubernetes`, `lxc` or `none`.
    pub container: String,
    /// `aws`, `gcp`, `azure`, `digitalocean`, `hetzner`, `openstack`, `kvm`, `vmware` or `none`,
    /// from the DMI strings.
    pub cloud: String,
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_release_field(text: &str, key: &str) -> String {
    os_release_value(text, key).unwrap_or_default()
}

impl HostInfo {
    /// Reads the host under `root` (normally `/`).
    pub fn read(root: &Path) -> HostInfo {
        let mut osr = read(root, "etc/os-release");
        if osr.is_empty() {
            osr = read(root, "usr/lib/os-release");
        }
        let cgroup = read(root, "proc/1/cgroup");
        let container = if root.join(".dockerenv").exists() {
            "docker"
        } else if root.join("run/.containerenv").exists() {
            "podman"
        } else if cgroup.contains("kubepods") {
            "kubernetes"
        } else if cgroup.contains("/lxc") || read(root, "proc/1/environ").contains("container=lxc")
        {
            "lxc"
        } else {
            "none"
        };
        let vendor = read(root, "sys/class/dmi/id/sys_vendor").to_lowercase();
        let product = read(root, "sys/class/dmi/id/product_name").to_lowercase();
        let bios = read(root, "sys/class/dmi/id/bios_vendor").to_lowercase();
        let cloud = if vendor.contains("amazon") || bios.contains("amazon") {
            "aws"
        } else if vendor.contains("google") {
            "gcp"
        } else if vendor.contains("microsoft") && product.contains("virtual machine") {
            "azure"
        } else if vendor.contains("digitalocean") {
            "digitalocean"
        } else if vendor.contains("hetzner") {
            "hetzner"
        } else if product.contains("openstack") {
            "openstack"
        } else if vendor.contains("vmware") {
            "vmware"
        } else if vendor.contains("qemu") || product.contains("kvm") {
            "kvm"
        } else {
            "none"
        };
        HostInfo {
            os: os_release_field(&osr, "ID"),
            os_version: os_release_field(&osr, "VERSION_ID"),
            kernel: read(root, "proc/sys/kernel/osrelease"),
            arch: std::env::consts::ARCH.to_string(),
            container: container.into(),
            cloud: cloud.into(),
        }
    }

    /// The value of a metadata field by name, for `enrich.host_labels`.
    pub fn field(&self, name: &str) -> Option<&str> {
        Some(match name {
            "os" => &self.os,
            "os_version" => &self.os_version,
            "kernel" => &self.kernel,
            "arch" => &self.arch,
            "container" => &self.container,
            "cloud" => &self.cloud,
            _ => return None,
        })
    }

    /// The field names [`HostInfo::field`] knows.
    pub const FIELDS: &'static [&'static str] =
        &["os", "os_version", "kernel", "arch", "container", "cloud"];
}

/// The value of `key` in an os-release file (os-release(5)): shell-like assignments whose
/// values may be quoted with `"` or `'`, with `\` escaping the next character inside quotes.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix('='))?
        .trim_end();
    let mut out = String::with_capacity(raw.len());
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => out.extend(chars.next()),
            (None, '#') => break,
            _ => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted_like_a_shell() {
        let text = "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION='12 (bookworm)'\n\
                    PRETTY_NAME=\"Say \\\"hi\\\"\"\nVERSION_ID=\"22.04.3\"\n";
        assert_eq!(
            os_release_value(text, "NAME").as_deref(),
            Some("Debian GNU/Linux")
        );
        assert_eq!(os_release_value(text, "ID").as_deref(), Some("debian"));
        assert_eq!(
            os_release_value(text, "VERSION").as_deref(),
            Some("12 (bookworm)")
        );
        assert_eq!(
            os_release_value(text, "PRETTY_NAME").as_deref(),
            Some("Say \"hi\"")
        );
        assert_eq!(os_release_value(text, "ID_LIKE"), None);
    }

    #[test]
    fn reads_os_release_container_and_cloud_hints() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (p, t) in [
            (
                "etc/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 13\"\nID=debian\nVERSION_ID=\"13\"\n",
            ),
            ("proc/sys/kernel/osrelease", "6.12.0-1-amd64\n"),
            ("proc/1/cgroup", "0::/kubepods/burstable/pod1\n"),
            ("sys/class/dmi/id/sys_vendor", "Amazon EC2\n"),
        ] {
            std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
            std::fs::write(r.join(p), t).unwrap();
        }
        let h = HostInfo::read(r);
        assert_eq!(
            (h.os.as_str(), h.os_version.as_str(), h.kernel.as_str()),
            ("debian", "13", "6.12.0-1-amd64")
        );
        assert_eq!(
            (h.container.as_str(), h.cloud.as_str()),
            ("kubernetes", "aws")
        );
        assert_eq!(h.field("arch"), Some(std::env::consts::ARCH));
        let bare = HostInfo::read(&r.join("nothing"));
        assert_eq!(
            (bare.container.as_str(), bare.cloud.as_str()),
            ("none", "none")
        );
    }
}
