//! Hardware sensors and identity from `/sys`: node_exporter's `hwmon` (temperatures, fans,
//! voltages, power), `thermal_zone` (thermal zones and cooling devices), `powersupplyclass`
//! (batteries and mains adapters) and `dmi` (the machine's vendor, model and firmware).
//!
//! Virtual machines and containers usually have none of these: each collector then yields
//! nothing and no error, as node_exporter's do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::CollectError;
use super::{Out, Root, list_dir};

/// A sysfs attribute without its trailing newline; `None` if it cannot be read.
fn attr(path: &Path) -> Option<String> {
    let t = super::read_text(path).ok()?;
    Some(t.trim_end_matches('\n').to_string())
}

/// Lower case, every character outside `[a-z0-9:_]` replaced by `_`, `_` trimmed at both
/// ends: how node_exporter turns chip and property names into label values and name parts.
fn clean(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_string()
}

/// The sensor types node_exporter reads from a hwmon directory.
const SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// Splits a hwmon file name `<type><id>[_<property>]` (`temp1_input` → `temp`, 1, `input`).
fn explode(file: &str) -> Option<(&str, u32, &str)> {
    let type_end = file
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(file.len());
    if type_end == 0 {
        return None;
    }
    let (kind, rest) = file.split_at(type_end);
    let id_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (id, rest) = rest.split_at(id_end);
    let property = match rest {
        "" => "",
        r => r.strip_prefix('_').filter(|p| !p.is_empty())?,
    };
    let id = if id.is_empty() { 0 } else { id.parse().ok()? };
    // node_exporter's pattern lets the type swallow a trailing `_property` when there is no
    // id (`update_interval`, `beep_enable`): the whole name is then the type.
    Some((kind, id, property))
}

/// The chip label: the device's bus and name (`platform_coretemp_0`, `pci0000:00_0000:00:18_3`)
/// or, without a device link, the `name` file or the directory's own name.
fn chip_name(dir: &Path) -> Option<String> {
    if let Ok(dev) = std::fs::canonicalize(dir.join("device")) {
        let name = dev.file_name().map(|n| clean(&n.to_string_lossy()));
        let bus = dev
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| clean(&n.to_string_lossy()));
        match (bus, name) {
            (Some(b), Some(n)) if !b.is_empty() && !n.is_empty() => {
                return Some(format!("{b}_{n}"));
            }
            (_, Some(n)) if !n.is_empty() => return Some(n),
            _ => {}
        }
    }
    if let Some(n) = attr(&dir.join("name"))
        .map(|n| clean(&n))
        .filter(|n| !n.is_empty())
    {
        return Some(n);
    }
    let real = std::fs::canonicalize(dir).ok()?;
    Some(clean(&real.file_name()?.to_string_lossy())).filter(|n| !n.is_empty())
}

/// Reads the sensor files of `dir` into `sensor → property → value`.
fn sensor_files(dir: &Path, data: &mut BTreeMap<String, BTreeMap<String, String>>) {
    let Ok(Some(files)) = list_dir(dir) else {
        return;
    };
    for (file, path) in files {
        let Some((kind, id, property)) = explode(&file) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&kind) {
            continue;
        }
        if let Some(v) = attr(&path) {
            data.entry(format!("{kind}{id}"))
                .or_default()
                .insert(property.to_string(), v);
        }
    }
}

/// node_exporter's `hwmon`: `node_hwmon_<type>[_<property>]_<unit>{chip,sensor}`, with its
/// unit conversions (milli-degrees, millivolts and milliamperes to base units, microwatts and
/// microjoules to watts and joules), `node_hwmon_chip_names` and `node_hwmon_sensor_label`.
pub fn collect_hwmon(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(chips) = list_dir(&root.sys.join("class/hwmon"))? else {
        return Ok(());
    };
    for (_, dir) in chips {
        if !dir.is_dir() {
            continue;
        }
        let Some(chip) = chip_name(&dir) else {
            continue;
        };
        let mut data = BTreeMap::new();
        sensor_files(&dir, &mut data);
        sensor_files(&dir.join("device"), &mut data);
        if let Some(n) = attr(&dir.join("name"))
            .map(|n| clean(&n))
            .filter(|n| !n.is_empty())
        {
            out.add(
                "node_hwmon_chip_names",
                &[("chip", &chip), ("chip_name", &n)],
                1.0,
            );
        }
        for (sensor, props) in &data {
            hwmon_sensor(&chip, sensor, props, out);
        }
    }
    Ok(())
}

fn hwmon_sensor(chip: &str, sensor: &str, props: &BTreeMap<String, String>, out: &mut Out) {
    let kind = explode(sensor).map_or("", |e| e.0);
    let labels = [("chip", chip), ("sensor", sensor)];
    if let Some(label) = props.get("label") {
        out.add(
            "node_hwmon_sensor_label",
            &[("chip", chip), ("label", label), ("sensor", sensor)],
            1.0,
        );
    }
    let bare = props.get("");
    match kind {
        "beep_enable" => {
            let v = f64::from(u8::from(bare.is_some_and(|v| v == "1")));
            out.add("node_hwmon_beep_enabled", &labels, v);
            return;
        }
        "vrm" | "update_interval" => {
            if let Some(v) = bare.and_then(|v| v.parse::<f64>().ok()) {
                let (name, v) = if kind == "vrm" {
                    ("node_hwmon_voltage_regulator_version", v)
                } else {
                    ("node_hwmon_update_interval_seconds", v * 0.001)
                };
                out.add(name, &labels, v);
            }
            return;
        }
        _ => {}
    }
    let prefix = format!("node_hwmon_{kind}");
    for (element, value) in props {
        if element == "label" {
            continue;
        }
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let mut name = prefix.clone();
        if element == "input" {
            if bare.is_some() {
                name.push_str("_input");
            }
        } else if !element.is_empty() {
            name.push('_');
            name.push_str(&clean(element));
        }
        let e = element.as_str();
        let (name, v) = match (kind, e) {
            (_, "fault" | "alarm") => (name, v),
            (_, "beep") => (name + "_enabled", v),
            ("in" | "cpu", _) => (name + "_volts", v * 0.001),
            ("temp", e) if e != "type" => (name + "_celsius", v * 0.001),
            ("curr", _) => (name + "_amps", v * 0.001),
            ("energy", _) => (name + "_joule_total", v / 1e6),
            ("power", "accuracy") => (name, v / 1e6),
            ("power", "average_interval" | "average_interval_min" | "average_interval_max") => {
                (name + "_seconds", v * 0.001)
            }
            ("power", _) => (name + "_watt", v / 1e6),
            ("humidity", _) => (name, v / 1e6),
            ("fan", "input" | "min" | "max" | "target") => (name + "_rpm", v),
            _ => (name, v),
        };
        out.add(&name, &labels, v);
    }
}

/// node_exporter's `thermal_zone`: `node_thermal_zone_temp{zone,type}` (degrees Celsius) and
/// `node_cooling_device_{cur,max}_state{name,type}`.
pub fn collect_thermal(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(items) = list_dir(&root.sys.join("class/thermal"))? else {
        return Ok(());
    };
    for (name, dir) in items {
        if let Some(zone) = name.strip_prefix("thermal_zone") {
            // A zone whose sensor is unavailable (ENODATA, EAGAIN) is skipped.
            let (Some(kind), Some(temp)) = (attr(&dir.join("type")), attr(&dir.join("temp")))
            else {
                continue;
            };
            if let Ok(t) = temp.trim().parse::<f64>() {
                out.add(
                    "node_thermal_zone_temp",
                    &[("type", &kind), ("zone", zone)],
                    t / 1000.0,
                );
            }
        } else if let Some(dev) = name.strip_prefix("cooling_device") {
            let Some(kind) = attr(&dir.join("type")) else {
                continue;
            };
            for (file, metric) in [
                ("cur_state", "node_cooling_device_cur_state"),
                ("max_state", "node_cooling_device_max_state"),
            ] {
                if let Some(v) = attr(&dir.join(file)).and_then(|v| v.trim().parse::<f64>().ok()) {
                    out.add(metric, &[("name", dev), ("type", &kind)], v);
                }
            }
        }
    }
    Ok(())
}

/// `/sys/class/power_supply/<ps>/<file>` → `node_power_supply_<metric>`, divided by the scale.
const POWER_SUPPLY: &[(&str, &str, f64)] = &[
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        1e6,
    ),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        1e6,
    ),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// Text attributes of a power supply, the labels of `node_power_supply_info`.
const POWER_SUPPLY_INFO: [&str; 11] = [
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
    "scope",
];

/// node_exporter's `powersupplyclass`: `node_power_supply_<metric>{power_supply}` and
/// `node_power_supply_info`.
pub fn collect_power_supply(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(supplies) = list_dir(&root.sys.join("class/power_supply"))? else {
        return Ok(());
    };
    for (ps, dir) in supplies {
        let l = [("power_supply", ps.as_str())];
        for (file, metric, scale) in POWER_SUPPLY {
            if let Some(v) = attr(&dir.join(file)).and_then(|v| v.trim().parse::<f64>().ok()) {
                out.add(&format!("node_power_supply_{metric}"), &l, v / scale);
            }
        }
        let texts: Vec<(&str, String)> = POWER_SUPPLY_INFO
            .iter()
            .filter_map(|f| Some((*f, attr(&dir.join(f))?)))
            .collect();
        let mut labels: Vec<(&str, &str)> = vec![("power_supply", &ps)];
        labels.extend(texts.iter().map(|(k, v)| (*k, v.as_str())));
        out.add("node_power_supply_info", &labels, 1.0);
    }
    Ok(())
}

/// `/sys/class/dmi/id` files and their `node_dmi_info` label names.
const DMI: [(&str, &str); 20] = [
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("sys_vendor", "system_vendor"),
];

/// The DMI strings do not change while the machine runs: read once per root, as
/// node_exporter reads them once at start.
static DMI_CACHE: Mutex<Option<(PathBuf, DmiLabels)>> = Mutex::new(None);

/// `(label, value)` pairs of `node_dmi_info`.
type DmiLabels = Vec<(&'static str, String)>;

/// node_exporter's `dmi`: `node_dmi_info{bios_vendor,product_name,...} 1` with the strings
/// this user may read (serial numbers and the UUID need root).
pub fn collect_dmi(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let mut cache = DMI_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let fresh = cache.as_ref().is_none_or(|(r, _)| *r != root.sys);
    if fresh {
        let dir = root.sys.join("class/dmi/id");
        let values = DMI
            .iter()
            .filter_map(|(file, label)| Some((*label, attr(&dir.join(file))?.trim().to_string())))
            .collect();
        *cache = Some((root.sys.clone(), values));
    }
    let Some((_, values)) = cache.as_ref() else {
        return Ok(());
    };
    if values.is_empty() {
        return Ok(());
    }
    let labels: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    out.add("node_dmi_info", &labels, 1.0);
    Ok(())
}

/// node_exporter's `edac`: memory errors per controller
/// (`node_edac_{correctable,uncorrectable}_errors_total{controller}`) and per chip-select row
/// (`node_edac_csrow_{correctable,uncorrectable}_errors_total{controller,csrow}`, the errors
/// without row information as `csrow="unknown"`). Machines without ECC memory have none.
pub fn collect_edac(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    let Some(controllers) = list_dir(&root.sys.join("devices/system/edac/mc"))? else {
        return Ok(());
    };
    let count = |p: &Path| -> Result<f64, String> {
        attr(p)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("{}: unreadable", p.display()))
    };
    for (name, dir) in controllers {
        let Some(mc) = name
            .strip_prefix("mc")
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let c = [("controller", mc)];
        out.add(
            "node_edac_correctable_errors_total",
            &c,
            count(&dir.join("ce_count"))?,
        );
        out.add(
            "node_edac_uncorrectable_errors_total",
            &c,
            count(&dir.join("ue_count"))?,
        );
        let unknown = [("controller", mc), ("csrow", "unknown")];
        let ce = count(&dir.join("ce_noinfo_count"))?;
        let ue = count(&dir.join("ue_noinfo_count"))?;
        out.add("node_edac_csrow_correctable_errors_total", &unknown, ce);
        out.add("node_edac_csrow_uncorrectable_errors_total", &unknown, ue);
        for (row_name, row) in list_dir(&dir)?.unwrap_or_default() {
            let Some(csrow) = row_name
                .strip_prefix("csrow")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let l = [("controller", mc), ("csrow", csrow)];
            out.add(
                "node_edac_csrow_correctable_errors_total",
                &l,
                count(&row.join("ce_count"))?,
            );
            out.add(
                "node_edac_csrow_uncorrectable_errors_total",
                &l,
                count(&row.join("ue_count"))?,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::host::exposition;

    fn root(dir: &Path) -> Root {
        crate::sources::host::fixtures::tree(dir)
    }

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn hwmon_file_names_split_like_node_exporter() {
        assert_eq!(explode("temp1_input"), Some(("temp", 1, "input")));
        assert_eq!(explode("temp1_crit_alarm"), Some(("temp", 1, "crit_alarm")));
        assert_eq!(explode("pwm2"), Some(("pwm", 2, "")));
        assert_eq!(explode("in0_input"), Some(("in", 0, "input")));
        assert_eq!(explode("update_interval"), Some(("update_interval", 0, "")));
        assert_eq!(explode("name"), Some(("name", 0, "")));
        assert_eq!(explode("1abc"), None);
        assert_eq!(clean("Core 0"), "core_0");
        assert_eq!(clean("coretemp.0"), "coretemp_0");
        assert_eq!(clean("0000:00:18.3"), "0000:00:18_3");
    }

    #[test]
    fn hwmon_sensors_become_node_exporter_series() {
        let dir = tempfile::tempdir().unwrap();
        let r = root(dir.path());
        let dev = dir.path().join("sys/devices/platform/coretemp.0");
        let hw = dev.join("hwmon/hwmon1");
        for (f, v) in [
            ("name", "coretemp\n"),
            ("temp1_input", "45000\n"),
            ("temp1_crit", "100000\n"),
            ("temp1_crit_alarm", "0\n"),
            ("temp1_label", "Package id 0\n"),
            ("fan1_input", "1200\n"),
            ("in0_input", "1024\n"),
            ("power1_input", "12500000\n"),
            ("energy1_input", "3000000\n"),
            ("update_interval", "1000\n"),
        ] {
            write(hw.join(f), v);
        }
        std::os::unix::fs::symlink(&dev, hw.join("device")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class/hwmon")).unwrap();
        std::os::unix::fs::symlink(&hw, dir.path().join("sys/class/hwmon/hwmon1")).unwrap();
        let mut out = Out::new(0);
        collect_hwmon(&r, &mut out).unwrap();
        let text = exposition(&out.series);
        let l = "chip=\"platform_coretemp_0\",sensor=";
        for line in [
            format!("node_hwmon_temp_celsius{{{l}\"temp1\"}} 45"),
            format!("node_hwmon_temp_crit_celsius{{{l}\"temp1\"}} 100"),
            format!("node_hwmon_temp_crit_alarm_celsius{{{l}\"temp1\"}} 0"),
            format!("node_hwmon_fan_rpm{{{l}\"fan1\"}} 1200"),
            format!("node_hwmon_in_volts{{{l}\"in0\"}} 1.024"),
            format!("node_hwmon_power_watt{{{l}\"power1\"}} 12.5"),
            format!("node_hwmon_energy_joule_total{{{l}\"energy1\"}} 3"),
            format!("node_hwmon_update_interval_seconds{{{l}\"update_interval0\"}} 1"),
            "node_hwmon_chip_names{chip=\"platform_coretemp_0\",chip_name=\"coretemp\"} 1".into(),
            "node_hwmon_sensor_label{chip=\"platform_coretemp_0\",label=\"Package id 0\",sensor=\"temp1\"} 1".into(),
            "# TYPE node_hwmon_energy_joule_total counter".into(),
        ] {
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn thermal_power_supply_and_dmi() {
        let dir = tempfile::tempdir().unwrap();
        let r = root(dir.path());
        let mut out = Out::new(0);
        // Nothing there (a VM): nothing reported, no error.
        collect_thermal(&r, &mut out).unwrap();
        collect_power_supply(&r, &mut out).unwrap();
        collect_hwmon(&r, &mut out).unwrap();
        assert!(out.series.is_empty());
        let s = dir.path().join("sys/class");
        write(s.join("thermal/thermal_zone0/type"), "x86_pkg_temp\n");
        write(s.join("thermal/thermal_zone0/temp"), "52000\n");
        write(s.join("thermal/thermal_zone1/type"), "acpitz\n");
        write(s.join("thermal/cooling_device3/type"), "Processor\n");
        write(s.join("thermal/cooling_device3/cur_state"), "0\n");
        write(s.join("thermal/cooling_device3/max_state"), "10\n");
        write(s.join("power_supply/AC/online"), "1\n");
        write(s.join("power_supply/AC/type"), "Mains\n");
        write(s.join("power_supply/BAT0/voltage_now"), "12100000\n");
        write(s.join("power_supply/BAT0/temp"), "305\n");
        write(s.join("power_supply/BAT0/status"), "Discharging\n");
        write(s.join("dmi/id/sys_vendor"), "QEMU\n");
        write(
            s.join("dmi/id/product_name"),
            "Standard PC (Q35 + ICH9, 2009)\n",
        );
        collect_thermal(&r, &mut out).unwrap();
        collect_power_supply(&r, &mut out).unwrap();
        collect_dmi(&r, &mut out).unwrap();
        let text = exposition(&out.series);
        for line in [
            "node_thermal_zone_temp{type=\"x86_pkg_temp\",zone=\"0\"} 52",
            "node_cooling_device_max_state{name=\"3\",type=\"Processor\"} 10",
            "node_power_supply_online{power_supply=\"AC\"} 1",
            "node_power_supply_info{power_supply=\"AC\",type=\"Mains\"} 1",
            "node_power_supply_voltage_volt{power_supply=\"BAT0\"} 12.1",
            "node_power_supply_temp_celsius{power_supply=\"BAT0\"} 30.5",
            "node_dmi_info{product_name=\"Standard PC (Q35 + ICH9, 2009)\",system_vendor=\"QEMU\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // A zone without a readable temperature is skipped.
        assert!(!text.contains("acpitz"));
    }

    #[test]
    fn edac_counts_per_controller_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let r = root(dir.path());
        let mut out = Out::new(0);
        collect_edac(&r, &mut out).unwrap();
        assert!(out.series.is_empty());
        let mc = dir.path().join("sys/devices/system/edac/mc/mc0");
        for (f, v) in [
            ("ce_count", "3\n"),
            ("ue_count", "0\n"),
            ("ce_noinfo_count", "1\n"),
            ("ue_noinfo_count", "0\n"),
            ("csrow0/ce_count", "2\n"),
            ("csrow0/ue_count", "0\n"),
        ] {
            write(mc.join(f), v);
        }
        collect_edac(&r, &mut out).unwrap();
        let text = exposition(&out.series);
        for line in [
            "node_edac_correctable_errors_total{controller=\"0\"} 3",
            "node_edac_csrow_correctable_errors_total{controller=\"0\",csrow=\"0\"} 2",
            "node_edac_csrow_correctable_errors_total{controller=\"0\",csrow=\"unknown\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        std::fs::remove_file(mc.join("ue_count")).unwrap();
        assert!(collect_edac(&r, &mut out).is_err());
    }
}
