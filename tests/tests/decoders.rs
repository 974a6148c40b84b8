//! The fuzz targets (`telltale_tests::decoders`) on stable: every input cargo-fuzz found a
//! crash with (kept under `tests/fuzz/regressions/<target>/`), and seeded mutations of valid
//! inputs — bit flips, truncations, insertions, splices — through every target. The seed is
//! printed; `TT_FUZZ_SEED=N` replays a run. cargo-fuzz itself (nightly) runs in `.ci/run`.

use std::path::{Path, PathBuf};

use telltale_tests::decoders::{TARGETS, run, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every target has its cargo-fuzz binary, and every binary is a target.
#[test]
fn every_decoder_target_has_a_cargo_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    bins.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(bins, names);
    for n in &names {
        assert!(
            manifest.contains(&format!("name = \"{n}\"")),
            "{n} in tests/fuzz/Cargo.toml"
        );
        let src = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{n}.rs"))).unwrap();
        assert!(
            src.contains(&format!("decoders::{n}(data)")),
            "{n}.rs calls its body"
        );
    }
}

/// Inputs that once crashed a target (and seeds of every target) still go through.
#[test]
fn kept_crash_inputs_and_seeds_go_through_every_target() {
    let dir = fuzz_dir().join("regressions");
    let mut kept = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let target = p.file_name().unwrap().to_str().unwrap().to_string();
        for f in std::fs::read_dir(&p).unwrap() {
            let f = f.unwrap().path();
            let data = std::fs::read(&f).unwrap();
            assert!(run(&target, &data), "{}: no target {target:?}", f.display());
            kept += 1;
        }
    }
    for (name, f) in TARGETS {
        let s = seeds(name);
        assert!(!s.is_empty(), "{name} has seeds");
        for d in s {
            f(&d);
        }
    }
    eprintln!("{kept} kept crash inputs replayed");
}

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(r: &mut Rng, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    for _ in 0..1 + r.below(4) {
        match r.below(6) {
            0 if !v.is_empty() => {
                let i = r.below(v.len());
                v[i] ^= 1 << r.below(8);
            }
            1 => v.truncate(r.below(v.len() + 1)),
            2 => {
                let i = r.below(v.len() + 1);
                let junk: Vec<u8> = (0..r.below(16)).map(|_| r.next() as u8).collect();
                v.splice(i..i, junk);
            }
            3 if !v.is_empty() => {
                // An interesting byte: lengths and tags live at the edges of these values.
                let i = r.below(v.len());
                v[i] = [0, 0x7f, 0x80, 0xff, b'"', b'{', b'\n', b'|'][r.below(8)];
            }
            4 => {
                let i = r.below(v.len() + 1);
                let j = r.below(b.len() + 1);
                v.truncate(i);
                v.extend_from_slice(&b[j..]);
            }
            _ => {
                if v.len() > 1 {
                    let i = r.below(v.len());
                    let j = r.below(v.len());
                    let (lo, hi) = (i.min(j), i.max(j));
                    let copy = v[lo..hi].to_vec();
                    v.splice(hi..hi, copy);
                }
            }
        }
    }
    v
}

#[test]
fn mutated_valid_inputs_never_panic_any_decoder() {
    let seed = std::env::var("TT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| telltale_common::model::now_ms() as u64 | 1);
    eprintln!("TT_FUZZ_SEED={seed}");
    let mut r = Rng(seed);
    for (name, f) in TARGETS {
        let s = seeds(name);
        // Opening a data directory starts the engine's threads: fewer rounds.
        let rounds = if *name == "data_dir" { 40 } else { 400 };
        for _ in 0..rounds {
            let a = &s[r.below(s.len())];
            let b = &s[r.below(s.len())];
            let input = mutate(&mut r, a, b);
            let name = name.to_string();
            let ok = std::panic::catch_unwind(|| f(&input));
            if ok.is_err() {
                let keep = std::env::temp_dir().join(format!("tt-crash-{name}-{seed}"));
                let _ = std::fs::write(&keep, &input);
                panic!(
                    "{name} panicked on {} bytes (saved as {}; replay with TT_FUZZ_SEED={seed}, \
                     then keep it under tests/fuzz/regressions/{name}/)",
                    input.len(),
                    keep.display()
                );
            }
        }
    }
}

/// Writes every target's seeds into `$TT_FUZZ_SEEDS/<target>/` for cargo-fuzz (`.ci/run`).
#[test]
#[ignore = "run by .ci/run with TT_FUZZ_SEEDS set"]
fn write_seed_corpora() {
    let out = PathBuf::from(std::env::var("TT_FUZZ_SEEDS").expect("TT_FUZZ_SEEDS"));
    for (name, _) in TARGETS {
        let d = out.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (i, s) in seeds(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
