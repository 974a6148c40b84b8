//! The clock: node_exporter's `time` collector (the time, the zone offset, the kernel's clock
//! sources) and its `timex` collector (the kernel's NTP discipline state from `adjtimex(2)`).
//!
//! The two C calls here are the only unsafe code in the agent: neither `std` nor `rustix` wraps
//! `adjtimex` or `localtime_r`. Both are read-only: `adjtimex` with `modes = 0` changes nothing
//! and needs no privilege, and `localtime_r` fills a caller-owned struct.
#![allow(unsafe_code)]

use super::CollectError;
use super::{Out, Root};

/// node_exporter's `time`: `node_time_seconds` (the host's clock at collection time),
/// `node_time_zone_offset_seconds{time_zone}`, `node_time_clocksource_available_info` and
/// `node_time_clocksource_current_info{device,clocksource}`.
pub fn collect_time(root: &Root, out: &mut Out) -> Result<(), CollectError> {
    out.add("node_time_seconds", &[], out.t_ms() as f64 / 1000.0);
    let (zone, offset) = local_zone(out.t_ms() / 1000);
    out.add(
        "node_time_zone_offset_seconds",
        &[("time_zone", &zone)],
        offset as f64,
    );
    let base = root.sys.join("devices/system/clocksource");
    let Ok(dir) = std::fs::read_dir(&base) else {
        return Ok(());
    };
    let mut devices: Vec<u32> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("clocksource")?.parse().ok()
        })
        .collect();
    devices.sort_unstable();
    for (i, n) in devices.iter().enumerate() {
        let dev = format!("clocksource{n}");
        let read = |f: &str| {
            root.sys_file(&format!("devices/system/clocksource/{dev}/{f}"))
                .map_err(|e| format!("{}/{dev}/{f}: {e}", base.display()))
        };
        // node_exporter numbers the clock sources by their order, not by their names.
        let device = i.to_string();
        for cs in read("available_clocksource")?.split_ascii_whitespace() {
            out.add(
                "node_time_clocksource_available_info",
                &[("clocksource", cs), ("device", &device)],
                1.0,
            );
        }
        let current = read("current_clocksource")?;
        out.add(
            "node_time_clocksource_current_info",
            &[("clocksource", current.trim()), ("device", &device)],
            1.0,
        );
    }
    Ok(())
}

/// The local time zone's abbreviation and its offset from UTC in seconds at `t` (Unix
/// seconds), as the C library resolves `TZ` and `/etc/localtime`.
fn local_zone(t: i64) -> (String, i64) {
    let t: libc::time_t = t;
    // SAFETY: `tm` is plain integers and one pointer, for which all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return ("UTC".into(), 0);
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: glibc points tm_zone at a NUL-terminated abbreviation it keeps for the life
        // of the process (its zone-name table); it is copied at once.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    (zone, tm.tm_gmtoff)
}

/// `STA_NANO`: the offset and jitter fields are in nanoseconds, not microseconds.
const STA_NANO: i32 = 0x2000;
/// `TIME_ERROR`: the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// Frequencies are in parts per million with a 16-bit fraction (adjtimex(2), NOTES).
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;

/// The kernel's NTP state as node_exporter's `timex` collector reports it.
pub fn collect_timex(_root: &Root, out: &mut Out) -> Result<(), CollectError> {
    // SAFETY: `timex` is all integers; all-zero (modes = 0) asks the kernel only to read.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a live, properly aligned timex the kernel fills in.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(CollectError::Read {
            path: "adjtimex(2)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let divisor = if tx.status & STA_NANO != 0 { 1e9 } else { 1e6 };
    let sync = if state == TIME_ERROR { 0.0 } else { 1.0 };
    let fields: [(&str, f64); 17] = [
        ("node_timex_sync_status", sync),
        ("node_timex_offset_seconds", tx.offset as f64 / divisor),
        (
            "node_timex_frequency_adjustment_ratio",
            1.0 + tx.freq as f64 / PPM16FRAC,
        ),
        ("node_timex_maxerror_seconds", tx.maxerror as f64 / 1e6),
        (
            "node_timex_estimated_error_seconds",
            tx.esterror as f64 / 1e6,
        ),
        ("node_timex_status", f64::from(tx.status)),
        ("node_timex_loop_time_constant", tx.constant as f64),
        ("node_timex_tick_seconds", tx.tick as f64 / 1e6),
        (
            "node_timex_pps_frequency_hertz",
            tx.ppsfreq as f64 / PPM16FRAC,
        ),
        ("node_timex_pps_jitter_seconds", tx.jitter as f64 / divisor),
        ("node_timex_pps_shift_seconds", f64::from(tx.shift)),
        (
            "node_timex_pps_stability_hertz",
            tx.stabil as f64 / PPM16FRAC,
        ),
        ("node_timex_pps_jitter_total", tx.jitcnt as f64),
        ("node_timex_pps_calibration_total", tx.calcnt as f64),
        ("node_timex_pps_error_total", tx.errcnt as f64),
        ("node_timex_pps_stability_exceeded_total", tx.stbcnt as f64),
        ("node_timex_tai_offset_seconds", f64::from(tx.tai)),
    ];
    for (name, v) in fields {
        out.add(name, &[], v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timex_reads_the_kernel_and_the_tick_is_plausible() {
        let mut out = Out::new(1_000);
        collect_timex(&Root::default(), &mut out).unwrap();
        assert_eq!(out.series.len(), 17);
        let tick = out
            .series
            .iter()
            .find(|s| s.labels.metric_name() == Some("node_timex_tick_seconds"))
            .unwrap()
            .samples[0]
            .1;
        // USER_HZ ticks: 100 to 1000 per second.
        assert!((0.001..=0.01).contains(&tick), "tick {tick}");
    }

    #[test]
    fn clock_sources_are_numbered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for (n, avail, cur) in [
            (0, "tsc hpet acpi_pm\n", "tsc\n"),
            (1, "jiffies\n", "jiffies\n"),
        ] {
            let d = dir
                .path()
                .join(format!("devices/system/clocksource/clocksource{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("available_clocksource"), avail).unwrap();
            std::fs::write(d.join("current_clocksource"), cur).unwrap();
        }
        let root = Root {
            proc: dir.path().into(),
            sys: dir.path().into(),
            rootfs: dir.path().into(),
        };
        let mut out = Out::new(0);
        collect_time(&root, &mut out).unwrap();
        let text = super::super::exposition(&out.series);
        assert!(
            text.contains(
                "node_time_clocksource_available_info{clocksource=\"hpet\",device=\"0\"} 1"
            )
        );
        assert!(text.contains(
            "node_time_clocksource_current_info{clocksource=\"jiffies\",device=\"1\"} 1"
        ));
        assert!(text.contains("node_time_zone_offset_seconds{time_zone="));
    }
}
