//! A fuzz harness on stable Rust, seeded and repeatable: mutated and random guest images go
//! through the loaders (in memory, no KVM) and run as guests (on the real /dev/kvm, under a
//! short --timeout). Every case must end in a result or a clear error: no panic, no hang, and
//! the process's peak memory stays under a fixed bound.
//!
//! ```sh
//! cargo test --release --test fuzz -- --ignored        # the full run: 10,000 cases
//! FUZZ_SEED=7 FUZZ_CASES=50000 cargo test --release --test fuzz -- --ignored
//! ```
//! `cargo test` (and CI) runs a short seeded slice. This file holds its two tests only: the
//! peak-memory check reads this process's own high-water mark.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mini_kvm::config::{GuestImage, RunConfig};
use mini_kvm::console::{GuestInput, GuestIo, GuestOutput};
use mini_kvm::loader::builtin::{GuestMode, builtin_guests};
use mini_kvm::loader::{self, LoadOptions, LoaderError};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use common::{require_kvm, test_guest, test_kernel};

/// The process's peak resident memory may not pass this.
const PEAK_RSS_LIMIT_KIB: u64 = 512 * 1024;
/// A guest case that takes longer than this (its --timeout is 0.2 s) counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// xorshift64*: a small, seeded, repeatable generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// An image mutations start from, with the mode a flat binary starts in (`None`: a kernel,
/// whose format decides, or real mode).
struct Seed {
    image: Vec<u8>,
    mode: Option<GuestMode>,
}

/// Every built-in guest (every mode, the OS's multiboot kernel), the test kernels (ELF32,
/// ELF64, multiboot, PVH) and test guests that use the UART, the hypercall errors and `int`.
fn seeds() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = builtin_guests()
        .iter()
        .map(|guest| Seed {
            image: guest.image.to_vec(),
            mode: guest.mode(),
        })
        .collect();
    for kernel in ["elf32", "elf64", "multiboot", "pvh"] {
        let image = std::fs::read(test_kernel(kernel)).unwrap();
        seeds.push(Seed { image, mode: None });
    }
    for guest in ["uart_irq", "hc_errors", "int80", "mark_ram"] {
        let image = std::fs::read(test_guest(guest)).unwrap();
        seeds.push(Seed { image, mode: None });
    }
    seeds
}

/// One mutated image: a seed changed in one of several ways, or random bytes.
fn mutate(rng: &mut Rng, seed: &Seed) -> Vec<u8> {
    let mut image = seed.image.clone();
    match rng.below(6) {
        // Flip bits anywhere.
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(image.len());
                image[at] ^= 1 << rng.below(8);
            }
        }
        // Overwrite a header field: the first 128 bytes (ELF header and program headers, the
        // start of a flat binary) or around the multiboot header, with an interesting value.
        1 => {
            let interesting: [u32; 8] =
                [0, 1, 0x7f, 0x80, 0xffff, 0x8000_0000, u32::MAX, 0x10_0000];
            let value = interesting[rng.below(interesting.len())].to_le_bytes();
            let region = if rng.below(2) == 0 {
                128
            } else {
                image.len().min(8192)
            };
            let at = rng.below(region.min(image.len()).saturating_sub(4).max(1));
            let end = (at + 4).min(image.len());
            image[at..end].copy_from_slice(&value[..end - at]);
        }
        // Cut it short.
        2 => image.truncate(rng.below(image.len()) + 1),
        // Random bytes appended.
        3 => {
            let extra = rng.below(4096);
            image.extend((0..extra).map(|_| rng.next() as u8));
        }
        // Random bytes over a random range.
        4 => {
            let at = rng.below(image.len());
            let len = rng.below(64).min(image.len() - at);
            for byte in &mut image[at..at + len] {
                *byte = rng.next() as u8;
            }
        }
        // Nothing of a seed: random bytes (code for a flat binary).
        _ => {
            let len = 1 + rng.below(2048);
            image = (0..len).map(|_| rng.next() as u8).collect();
        }
    }
    image
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    loaded: usize,
    refused: usize,
    ran: usize,
    setup_errors: usize,
    panics: Vec<String>,
    hangs: Vec<String>,
}

/// Loads `image` into memory the way `mini-kvm run` would, without KVM, and returns the
/// options that fit its format: a `--mode` given to a kernel or a `--cmdline` given to a flat
/// binary is refused (those errors are fuzzed too), and then dropped so the guest can run.
fn load_only(
    image: &[u8],
    mut options: LoadOptions<'static>,
    tally: &mut Tally,
) -> LoadOptions<'static> {
    let memory: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    loop {
        match catch_unwind(AssertUnwindSafe(|| {
            loader::load(&memory, "fuzz.bin", image, &options)
        })) {
            Ok(Ok(_)) => tally.loaded += 1,
            Ok(Err(LoaderError::ModeForKernel { .. })) => {
                options.flat_mode = None;
                tally.refused += 1;
                continue;
            }
            Ok(Err(LoaderError::CmdlineNotSupported { .. })) => {
                options.cmdline = None;
                tally.refused += 1;
                continue;
            }
            Ok(Err(_)) => tally.refused += 1,
            Err(_) => tally.panics.push(format!("loader, case {}", tally.cases)),
        }
        return options;
    }
}

/// Runs `image` as a guest from a file, through the library, under a short timeout.
fn run_as_guest(path: &Path, image: &[u8], options: LoadOptions, tally: &mut Tally) {
    std::fs::write(path, image).unwrap();
    let mut config = RunConfig::new(vec![GuestImage::File(path.to_path_buf())]);
    config.vm.memory_size = Some(2 << 20);
    config.vm.mode = options.flat_mode;
    config.vm.cmdline = options.cmdline.map(String::from);
    config.timeout = Some(Duration::from_millis(200));
    let consoles = vec![GuestIo {
        output: GuestOutput::to_writer(Box::new(std::io::sink())),
        input: GuestInput::from_memory(std::io::Cursor::new(b"fuzz input\n".to_vec())),
    }];
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        mini_kvm::run_guests(&config, consoles, &AtomicBool::new(false))
    }));
    if started.elapsed() > HANG {
        tally
            .hangs
            .push(format!("case {} took {:?}", tally.cases, started.elapsed()));
    }
    match result {
        Ok(Ok(results)) => match &results[0].report {
            Ok(_) => tally.ran += 1,
            Err(mini_kvm::vmm::vm::VmError::VcpuPanicked(_)) => tally
                .panics
                .push(format!("vCPU thread, case {}", tally.cases)),
            Err(_) => tally.setup_errors += 1,
        },
        Ok(Err(_)) => tally.setup_errors += 1,
        Err(_) => tally.panics.push(format!("run, case {}", tally.cases)),
    }
}

fn fuzz(seed: u64, cases: usize) -> Tally {
    require_kvm();
    let seeds = seeds();
    let mut rng = Rng::new(seed);
    let dir: PathBuf = std::env::temp_dir().join(format!("mini-kvm-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzz.bin");
    let modes = [
        None,
        Some(GuestMode::Real),
        Some(GuestMode::Protected { paging: false }),
        Some(GuestMode::Long),
    ];
    // The panics a mutated image may cause are counted, not printed as they happen.
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut tally = Tally::default();
    for case in 0..cases {
        tally.cases = case;
        let seed = &seeds[rng.below(seeds.len())];
        let image = mutate(&mut rng, seed);
        // Mostly the seed's own mode; now and then another, and now and then a command line.
        let options = LoadOptions {
            flat_mode: if rng.below(4) == 0 {
                modes[rng.below(modes.len())]
            } else {
                seed.mode
            },
            cmdline: (rng.below(4) == 0).then_some("fuzz"),
            initrd: None,
            display: false,
        };
        let options = load_only(&image, options, &mut tally);
        run_as_guest(&path, &image, options, &mut tally);
    }
    tally.cases = cases;
    std::panic::set_hook(quiet);
    let _ = std::fs::remove_dir_all(&dir);
    tally
}

fn check(tally: &Tally) {
    let peak = peak_rss_kib();
    eprintln!(
        "fuzz: {} cases: loader {} loaded, {} refused; guests {} ran, {} setup errors; {} panics, \
         {} hangs; peak RSS {} KiB",
        tally.cases,
        tally.loaded,
        tally.refused,
        tally.ran,
        tally.setup_errors,
        tally.panics.len(),
        tally.hangs.len(),
        peak
    );
    assert!(tally.panics.is_empty(), "panics: {:?}", tally.panics);
    assert!(tally.hangs.is_empty(), "hangs: {:?}", tally.hangs);
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB over {PEAK_RSS_LIMIT_KIB} KiB"
    );
    // The harness reaches both outcomes of both layers, or it tests little.
    assert!(tally.loaded > 0 && tally.refused > 0, "{tally:?}");
    assert!(tally.ran > 0 && tally.setup_errors > 0, "{tally:?}");
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_seeded_slice_of_mutated_images_ends_cleanly() {
    check(&fuzz(1, 200));
}

#[test]
#[ignore = "the full fuzz run (10,000 cases, minutes): cargo test --release --test fuzz -- --ignored"]
fn ten_thousand_mutated_images_end_cleanly() {
    let seed = env_number("FUZZ_SEED", 2026);
    let cases = env_number("FUZZ_CASES", 10_000) as usize;
    check(&fuzz(seed, cases));
}
