//! Device-level fuzzing, in-process, on stable Rust (as cloud-hypervisor fuzzes each device):
//! every device model is driven through its bus interface ([`BusDevice::read`] and
//! [`BusDevice::write`]) with arbitrary accesses — sizes 1, 2, 4 and 8 at random offsets, in
//! random order, with random values — and the virtio devices also with arbitrary descriptor
//! tables, available rings and buffers in real guest memory (virtio-blk on a real temporary
//! image file, virtio-net on a real TAP device in a network namespace of its own thread,
//! virtio-rng). The hypercall handler gets random call numbers, registers and modes, and a
//! page table that maps pages at random (often outside RAM).
//!
//! Per case the harness checks: no panic (`catch_unwind`); no hang (a watchdog thread aborts the
//! process, naming the device, seed and case, when one case runs longer than [`HANG`]); no
//! unbounded allocation (the process's peak RSS, VmHWM in /proc/self/status, stays under
//! [`PEAK_RSS_LIMIT_KIB`]); no access outside guest memory (vm-memory bounds every guest access;
//! the block image's length must stay its capacity, so nothing is written past its end).
//!
//! Everything is seeded and repeatable: a failure prints the device, the seed and the case,
//! and `FUZZ_SEED=<seed> FUZZ_CASE=<case>` replays that one case. [`CORPUS`] keeps every
//! case that once failed; `cargo test` replays it.
//!
//! ```sh
//! # `cargo test` runs a short slice (a few thousand operations per device). The long run:
//! nice -n 10 cargo test --release --lib devices::fuzz::long_run -- --ignored --nocapture
//! FUZZ_SEED=7 FUZZ_SCALE=1000 nice -n 10 cargo test --release --lib devices::fuzz::long_run -- --ignored
//! ```
//! The net device needs root (a network namespace and a TAP device), as the virtio tests do.

use std::fs::File;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::CpuMode;
use crate::arch::x86::layout::{FRAMEBUFFER_ADDRESS, FRAMEBUFFER_SIZE};
use crate::console::{GuestInput, GuestOutput};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::display::vbe::{BochsVbe, SharedMode};
use crate::devices::display::vga_text::{CrtController, Cursor as TextCursor};
use crate::devices::fw_cfg::{FwCfg, MachineFacts};
use crate::devices::hypercall::abi::CallRegisters;
use crate::devices::hypercall::handler::{HypercallHandler, PageTables};
use crate::devices::legacy::debug_exit::DebugExit;
use crate::devices::legacy::debugcon::DebugConsole;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::Uart;
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::{MmioTransport, Notified};
use crate::devices::{BusDevice, IrqLine};

mod legacy;
mod virtio;

use legacy::*;
use virtio::*;

/// The process's peak resident memory may not pass this (the framebuffer alone is 16 MiB; the
/// whole test binary's other tests may run in the same process).
const PEAK_RSS_LIMIT_KIB: u64 = 1024 * 1024;
/// One case taking longer than this is a hang (a case is at most a few hundred operations).
const HANG: Duration = Duration::from_secs(30);
/// The virtio guests' RAM: small, so that random addresses often land in it.
const VIRTIO_MEMORY: u64 = 0x10_0000;
/// The block image's capacity (and its file's length, which must never change).
const IMAGE_SIZE: u64 = 64 * 1024;

/// xorshift64*: a small, seeded, repeatable generator. tests/fuzz.rs has the same few lines: an
/// integration test cannot reach this `#[cfg(test)]` module, and a generator in the library's
/// public API only for tests would be worse than the copy.
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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// A value shaped like what finds bugs: small numbers, edges, all ones, or anything.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => self.below(4),
            1 => self.below(0x200),
            2 => u64::MAX >> (self.below(64)),
            3 => 1 << self.below(64),
            _ => self.next(),
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The case the harness is in, for the watchdog: (a generation counter, when the case began).
struct Watch {
    generation: AtomicU64,
    started: Mutex<(Instant, String)>,
}

/// Starts (once per process) the watchdog thread, which aborts the whole process when one case
/// runs past [`HANG`]: a hung device cannot be unwound, and the abort's message says how to
/// replay the case.
fn watch() -> &'static Watch {
    static WATCH: OnceLock<Watch> = OnceLock::new();
    WATCH.get_or_init(|| {
        std::thread::spawn(|| {
            let mut seen = (u64::MAX, Instant::now());
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let watch = watch();
                let generation = watch.generation.load(Ordering::SeqCst);
                if generation != seen.0 {
                    seen = (generation, Instant::now());
                    continue;
                }
                let (started, case) = watch.started.lock().unwrap().clone();
                if !case.is_empty() && started.elapsed() > HANG {
                    eprintln!("device fuzz: {case} hung for over {HANG:?}: replay it with FUZZ_SEED and FUZZ_CASE");
                    std::process::abort();
                }
            }
        });
        Watch {
            generation: AtomicU64::new(0),
            started: Mutex::new((Instant::now(), String::new())),
        }
    })
}

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

/// What a run did, for the long run's figures.
#[derive(Default, Debug)]
struct Figures {
    cases: u64,
    operations: u64,
}

/// Runs `cases` cases of `device` from `seed` (or the one case FUZZ_CASE); each case gets its
/// own generator, `Rng::new(seed ^ case)`, and returns how many operations it did. A panic, a
/// hang or the peak RSS passing its bound fails with the seed and case.
fn run(device: &str, seed: u64, cases: u64, case: impl Fn(&mut Rng) -> u64) -> Figures {
    let seed = env("FUZZ_SEED").unwrap_or(seed);
    let range = match env("FUZZ_CASE") {
        Some(one) => one..one + 1,
        None => 0..env("FUZZ_CASES").unwrap_or(cases),
    };
    run_cases(device, seed, range, case)
}

/// Runs the cases `range` of `device` from `seed`, each watched and caught as [`run`] says.
fn run_cases(
    device: &str,
    seed: u64,
    range: std::ops::Range<u64>,
    case: impl Fn(&mut Rng) -> u64,
) -> Figures {
    let watch = watch();
    let mut figures = Figures::default();
    for number in range {
        let name = format!("{device} seed {seed} case {number}");
        *watch.started.lock().unwrap() = (Instant::now(), name.clone());
        watch.generation.fetch_add(1, Ordering::SeqCst);
        let mut rng = Rng::new(seed ^ number.wrapping_mul(0x1000_0000_01b3));
        match catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            Ok(operations) => figures.operations += operations,
            Err(_) => panic!(
                "device fuzz: {name} panicked (see above); replay with FUZZ_SEED={seed} FUZZ_CASE={number}"
            ),
        }
        figures.cases += 1;
        if number % 64 == 0 {
            let peak = peak_rss_kib();
            assert!(
                peak < PEAK_RSS_LIMIT_KIB,
                "device fuzz: {name}: peak RSS {peak} KiB passed {PEAK_RSS_LIMIT_KIB} KiB"
            );
        }
    }
    watch.started.lock().unwrap().1.clear();
    figures
}

/// One register access at a random offset below `span`, of a random size, a read or a write.
fn poke(rng: &mut Rng, device: &mut dyn BusDevice, span: u64) {
    let offset = if rng.chance(16) {
        rng.value()
    } else {
        rng.below(span)
    };
    let size = [1, 2, 4, 8][rng.below(4) as usize];
    if rng.chance(2) {
        let mut data = [0u8; 8];
        device.read(offset, &mut data[..size]);
    } else {
        let value = rng.value().to_le_bytes();
        device.write(offset, &value[..size]);
    }
}

/// `operations` random register accesses on `device`.
fn pokes(rng: &mut Rng, device: &mut dyn BusDevice, span: u64, operations: u64) -> u64 {
    for _ in 0..operations {
        poke(rng, device, span);
    }
    operations
}

fn output() -> GuestOutput {
    GuestOutput::to_writer(Box::new(std::io::sink()))
}

/// Guest input that holds some random bytes, then ends. The event loop would read the source
/// into the input's buffer (`fill`); here it is read to its end at once, so that a GETCHAR or
/// READ after the last byte sees end of input instead of waiting for an event loop.
fn input(rng: &mut Rng) -> GuestInput {
    let len = rng.below(64) as usize;
    let input = GuestInput::from_memory(Cursor::new(rng.bytes(len)));
    for _ in 0..4 {
        input.fill();
    }
    assert!(input.try_read(&mut []) == 0);
    input
}

/// (name, case function, cases in the short slice): a few thousand operations per device.
type Case = fn(&mut Rng) -> u64;
const DEVICES: [(&str, Case, u64); 8] = [
    ("uart", uart_case, 20),
    ("i8042", i8042_case, 20),
    ("fw_cfg", fw_cfg_case, 20),
    ("vbe", vbe_case, 20),
    ("small", small_devices_case, 20),
    ("hypercall", hypercall_case, 60),
    ("virtio-rng", rng_case, 40),
    ("virtio-blk", block_case, 40),
];

#[test]
fn every_device_survives_random_register_accesses_and_rings() {
    for (seed, (name, case, cases)) in DEVICES.iter().enumerate() {
        let completed = COMPLETED.load(Ordering::Relaxed);
        run(name, 0x5eed + seed as u64, *cases, case);
        if name.starts_with("virtio") && env("FUZZ_CASE").is_none() {
            assert!(
                COMPLETED.load(Ordering::Relaxed) > completed,
                "{name}: no request ever completed: the harness does not reach the device"
            );
        }
    }
}

/// The corpus: every (device, seed, case) that once failed, replayed alone. Add a line for each
/// bug the fuzzer finds, with the fix's commit.
const CORPUS: &[(&str, u64, u64)] = &[
    // The harness's own hang: GETCHAR waited for ever on input from memory that nobody had
    // read into the input's buffer (now `input()` fills it to its end).
    ("hypercall", 0x5eed + 5, 0),
    // A queue size of 0 (a driver's random QueueNum) divided by zero in the harness's ring
    // arithmetic, not in the device.
    ("virtio-rng", 0x5eed + 6, 2),
];

#[test]
fn the_corpus_still_passes() {
    for &(device, seed, number) in CORPUS {
        let (_, case, _) = DEVICES.iter().find(|(name, ..)| *name == device).unwrap();
        run_cases(device, seed, number..number + 1, case);
    }
}

#[test]
fn virtio_net_on_a_tap_device_survives_random_rings() {
    let figures = net_run(40);
    assert!(figures.operations > 0);
}

/// The long run: 10^6 inputs or more in total (3.5 million at the default FUZZ_SCALE of 100,
/// each device's slice times the scale; FUZZ_CASES instead sets every device's case count).
#[test]
#[ignore]
fn long_run() {
    let scale = env("FUZZ_SCALE").unwrap_or(100);
    let started = Instant::now();
    let mut total = 0;
    for (seed, (name, case, cases)) in DEVICES.iter().enumerate() {
        let begun = Instant::now();
        let completed = COMPLETED.load(Ordering::Relaxed);
        let figures = run(name, 0x10_0000 + seed as u64, cases * scale, case);
        total += figures.operations;
        eprintln!(
            "device fuzz: {name}: {} cases, {} operations, {} virtio requests completed, {:.1?}",
            figures.cases,
            figures.operations,
            COMPLETED.load(Ordering::Relaxed) - completed,
            begun.elapsed()
        );
    }
    let begun = Instant::now();
    let completed = COMPLETED.load(Ordering::Relaxed);
    let figures = net_run(40 * scale);
    total += figures.operations;
    eprintln!(
        "device fuzz: virtio-net: {} cases, {} operations, {} virtio requests completed, {:.1?}",
        figures.cases,
        figures.operations,
        COMPLETED.load(Ordering::Relaxed) - completed,
        begun.elapsed()
    );
    eprintln!(
        "device fuzz: {total} operations in {:.1?}, peak RSS {} KiB",
        started.elapsed(),
        peak_rss_kib()
    );
}
