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

/// The process's peak resident memory may not pass this (the framebuffer alone is 16 MiB; the
/// whole test binary's other tests may run in the same process).
const PEAK_RSS_LIMIT_KIB: u64 = 1024 * 1024;
/// One case taking longer than this is a hang (a case is at most a few hundred operations).
const HANG: Duration = Duration::from_secs(30);
/// The virtio guests' RAM: small, so that random addresses often land in it.
const VIRTIO_MEMORY: u64 = 0x10_0000;
/// The block image's capacity (and its file's length, which must never change).
const IMAGE_SIZE: u64 = 64 * 1024;

/// xorshift64*: a small, seeded, repeatable generator (tests/fuzz.rs uses the same).
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

// ---------------------------------------------------------------------------------------------
// Legacy and platform devices: register accesses only.

fn uart_case(rng: &mut Rng) -> u64 {
    let mut uart = Uart::new(output(), input(rng), IrqLine::disconnected(4));
    pokes(rng, &mut uart, 8, 200)
}

fn i8042_case(rng: &mut Rng) -> u64 {
    let mut i8042 = I8042::new(input(rng), IrqLine::disconnected(1));
    // Mostly the data (0) and command (4) ports, whose command sequences have state.
    let mut done = 0;
    for _ in 0..200 {
        if rng.chance(2) {
            let offset = [0, 4][rng.below(2) as usize];
            let value = [rng.value() as u8];
            if rng.chance(3) {
                let mut byte = [0];
                i8042.read(offset, &mut byte);
            } else {
                i8042.write(offset, &value);
            }
        } else {
            poke(rng, &mut i8042, 8);
        }
        done += 1;
    }
    done
}

fn fw_cfg_case(rng: &mut Rng) -> u64 {
    let files = (0..rng.below(4))
        .map(|i| {
            let len = rng.below(300) as usize;
            (format!("etc/file{i}"), rng.bytes(len))
        })
        .collect();
    let facts = MachineFacts {
        ram_size: rng.value(),
        cpus: rng.value() as u16,
        cmdline: rng.chance(2).then(|| "console=ttyS0".to_string()),
        files,
        graphics: rng.chance(2),
    };
    let mut fw_cfg = FwCfg::new(&facts);
    let mut done = 0;
    for _ in 0..200 {
        if rng.chance(4) {
            // Select a real item (0x00-0x20 or a file at 0x20..) and read it far past its end.
            let selector = (rng.below(0x28) as u16).to_le_bytes();
            fw_cfg.write(0, &selector);
            let mut bytes = vec![0u8; rng.below(600) as usize];
            for byte in bytes.chunks_mut(1) {
                fw_cfg.read(1, byte);
            }
        } else {
            poke(rng, &mut fw_cfg, 12);
        }
        done += 1;
    }
    done
}

/// The framebuffer is 16 MiB: made once and shared by every VBE case (a mode set clears it).
fn framebuffer() -> GuestMemoryMmap {
    static FRAMEBUFFER: OnceLock<GuestMemoryMmap> = OnceLock::new();
    FRAMEBUFFER
        .get_or_init(|| {
            GuestMemoryMmap::from_ranges(&[(
                GuestAddress(FRAMEBUFFER_ADDRESS),
                FRAMEBUFFER_SIZE as usize,
            )])
            .unwrap()
        })
        .clone()
}

fn vbe_case(rng: &mut Rng) -> u64 {
    let mode = SharedMode::default();
    let mut vbe = BochsVbe::new(framebuffer(), mode.clone());
    let mut done = 0;
    for _ in 0..200 {
        if rng.chance(2) {
            // An index (0-15, mostly real registers) then a 16-bit value, as a driver writes.
            vbe.write(0, &(rng.below(16) as u16).to_le_bytes());
            let value = match rng.below(3) {
                0 => rng.value() as u16,
                1 => [
                    0, 1, 0x41, 0xc1, 640, 480, 1024, 768, 1920, 1200, 8, 15, 16, 24, 32,
                ][rng.below(15) as usize],
                _ => rng.below(2048) as u16,
            };
            vbe.write(1, &value.to_le_bytes());
        } else {
            poke(rng, &mut vbe, 4);
        }
        done += 1;
    }
    // The mode it reports must fit the framebuffer.
    if let Some(mode) = *mode.lock().unwrap() {
        let end = mode.start + u64::from(mode.pitch) * u64::from(mode.height);
        assert!(
            end <= FRAMEBUFFER_SIZE,
            "mode {mode:?} does not fit the framebuffer"
        );
    }
    done
}

/// The small devices with little state: the debug console, isa-debug-exit, ACPI PM, the CRT
/// controller's cursor registers.
fn small_devices_case(rng: &mut Rng) -> u64 {
    let mut devices: Vec<(Box<dyn BusDevice>, u64)> = vec![
        (Box::new(DebugConsole::new(output())), 1),
        (Box::new(DebugExit), 4),
        (Box::new(AcpiPm), 16),
        (
            Box::new(CrtController::new(Arc::new(TextCursor::default()))),
            2,
        ),
    ];
    let mut done = 0;
    for _ in 0..200 {
        let (device, span) = &mut devices[rng.below(4) as usize];
        poke(rng, device.as_mut(), *span);
        done += 1;
    }
    done
}

// ---------------------------------------------------------------------------------------------
// The hypercall handler.

/// A page table that maps each page at random, fixed per case: often to RAM, sometimes past
/// its end or to the top of the address space, sometimes not at all.
struct RandomPages {
    salt: u64,
    ram: u64,
}

impl PageTables for RandomPages {
    fn translate(&mut self, linear: u64) -> Option<u64> {
        let mut page = Rng::new(self.salt ^ (linear >> 12));
        let offset = linear & 0xfff;
        match page.below(8) {
            0 => None,
            1 => Some(u64::MAX - 0xfff + offset),
            2 => Some((self.ram - 0x1000) + offset),
            3 => Some(linear),
            _ => Some((page.below(self.ram >> 12) << 12) + offset),
        }
    }
}

fn hypercall_case(rng: &mut Rng) -> u64 {
    static MEMORY: OnceLock<GuestMemoryMmap> = OnceLock::new();
    let memory = MEMORY
        .get_or_init(|| GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap())
        .clone();
    let mut handler = HypercallHandler::new(memory, output(), input(rng), Instant::now(), None);
    let mut pages = RandomPages {
        salt: rng.next(),
        ram: 0x10_0000,
    };
    let modes = [
        CpuMode::Real,
        CpuMode::Protected16,
        CpuMode::Protected32,
        CpuMode::Long64,
    ];
    for _ in 0..50 {
        let length = |rng: &mut Rng| match rng.below(4) {
            0 => rng.below(64),
            1 => rng.below(0x3000),
            _ => rng.value(),
        };
        let registers = CallRegisters {
            number: if rng.chance(2) {
                rng.below(16) as u8
            } else {
                rng.next() as u8
            },
            args: [rng.value(), length(rng), rng.value()],
            mode: modes[rng.below(4) as usize],
            data_segment_base: if rng.chance(2) { 0 } else { rng.value() },
        };
        let _ = handler.handle(&registers, &mut pages);
    }
    50
}

// ---------------------------------------------------------------------------------------------
// Virtio: the transport's registers, and rings and buffers in guest memory.

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

/// The queues' rings, when the driver set them up properly: queue q's descriptors, available
/// and used rings, from 0x1000 + q * 0x4000.
fn rings(queue: u64) -> (u64, u64, u64) {
    let base = 0x1000 + queue * 0x4000;
    (base, base + 0x1000, base + 0x2000)
}

/// A transport driven by a random driver: sometimes a correct initialisation, then random
/// register accesses, random descriptor tables, available-ring entries and buffer bytes, and
/// doorbells.
struct VirtioCase<'a> {
    rng: &'a mut Rng,
    transport: MmioTransport,
    memory: GuestMemoryMmap,
    queue_size: u16,
    /// The available ring's index the driver has written, per queue.
    avail: [u16; 2],
}

impl VirtioCase<'_> {
    fn set(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// What a driver does: status, features, queues, DRIVER_OK (with random slips).
    fn initialise(&mut self) {
        self.set(0x070, 1 | 2);
        self.set(0x024, 0);
        let features = if self.rng.chance(4) {
            self.rng.next() as u32
        } else {
            u32::MAX
        };
        self.set(0x020, features);
        self.set(0x024, 1);
        self.set(0x020, 1); // VERSION_1
        self.set(0x070, 1 | 2 | 8);
        for queue in 0..2 {
            self.set(0x030, queue as u32);
            let (descriptors, avail, used) = rings(queue);
            self.set(0x038, u32::from(self.queue_size));
            self.set(0x080, descriptors as u32);
            self.set(0x090, avail as u32);
            self.set(0x0a0, used as u32);
            self.set(0x044, 1);
        }
        self.set(0x070, 1 | 2 | 8 | 4);
    }

    /// An address: mostly in the buffer area, sometimes anywhere in RAM, at its end, or beyond.
    fn address(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.value(),
            1 => VIRTIO_MEMORY - self.rng.below(0x100),
            2 => self.rng.below(VIRTIO_MEMORY),
            _ => 0x10000 + self.rng.below(0x10000),
        }
    }

    fn length(&mut self) -> u32 {
        match self.rng.below(6) {
            0 => self.rng.value() as u32,
            1 => 16,
            2 => 1,
            3 => 512 * (1 + self.rng.below(8) as u32),
            _ => self.rng.below(0x2000) as u32,
        }
    }

    /// Writes one descriptor at index `index` of the table at `table`.
    fn descriptor(&mut self, table: u64, index: u64) {
        let flags = match self.rng.below(4) {
            0 => self.rng.next() as u16,
            _ => (self.rng.below(8) as u16) & (NEXT | WRITE | INDIRECT),
        };
        let next = if self.rng.chance(8) {
            self.rng.next() as u16
        } else {
            self.rng.below(u64::from(self.queue_size)) as u16
        };
        let address = self.address();
        let length = self.length();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&address.to_le_bytes());
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        bytes[12..14].copy_from_slice(&flags.to_le_bytes());
        bytes[14..].copy_from_slice(&next.to_le_bytes());
        let _ = self
            .memory
            .write_slice(&bytes, GuestAddress(table + index * 16));
    }

    /// Makes a chain head available on `queue`: fills a few descriptors (maybe an indirect
    /// table) and request headers, then bumps the available index (sometimes wildly).
    fn offer(&mut self, queue: u64) {
        let (descriptors, avail, _) = rings(queue);
        let size = u64::from(self.queue_size).max(1);
        for _ in 0..1 + self.rng.below(6) {
            let index = self.rng.below(size);
            self.descriptor(descriptors, index);
        }
        if self.rng.chance(4) {
            // An indirect table in the buffer area.
            let table = 0x10000 + self.rng.below(0x10000) / 16 * 16;
            for index in 0..self.rng.below(8) {
                self.descriptor(table, index);
            }
        }
        if self.rng.chance(2) {
            // A block request header somewhere in the buffer area: type, reserved, sector.
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(
                &([0u32, 1, 4, 8, 11, 13][self.rng.below(6) as usize]).to_le_bytes(),
            );
            let sector = if self.rng.chance(2) {
                self.rng.below(IMAGE_SIZE / 512 + 4)
            } else {
                self.rng.value()
            };
            header[8..].copy_from_slice(&sector.to_le_bytes());
            let at = 0x10000 + self.rng.below(0x10000);
            let _ = self.memory.write_slice(&header, GuestAddress(at));
        }
        let q = queue as usize;
        let slot = u64::from(self.avail[q]) % size;
        let head = self.rng.below(size) as u16;
        let _ = self
            .memory
            .write_obj(head, GuestAddress(avail + 4 + slot * 2));
        self.avail[q] = if self.rng.chance(16) {
            self.rng.next() as u16
        } else {
            self.avail[q].wrapping_add(1)
        };
        let flags = if self.rng.chance(8) {
            self.rng.next() as u16
        } else {
            0
        };
        let _ = self.memory.write_obj(flags, GuestAddress(avail));
        let _ = self
            .memory
            .write_obj(self.avail[q], GuestAddress(avail + 2));
    }

    /// The case: `operations` random steps.
    fn drive(&mut self, operations: u64) -> u64 {
        if !self.rng.chance(8) {
            self.initialise();
        }
        for _ in 0..operations {
            match self.rng.below(10) {
                0..=2 => poke(self.rng, &mut self.transport, 0x200),
                3..=5 => {
                    let queue = self.rng.below(2);
                    self.offer(queue);
                }
                6 => {
                    let at = self.address();
                    let len = self.rng.below(64) as usize;
                    let bytes = self.rng.bytes(len);
                    let _ = self.memory.write_slice(&bytes, GuestAddress(at));
                }
                _ => {
                    // The doorbell, as the event loop rings it: turns until done (bounded).
                    let queue = if self.rng.chance(8) {
                        self.rng.below(4)
                    } else {
                        self.rng.below(2)
                    };
                    for _ in 0..64 {
                        if self.transport.notify(queue as usize) == Notified::Done {
                            break;
                        }
                    }
                }
            }
        }
        operations
    }
}

fn virtio_case(rng: &mut Rng, device: Box<dyn VirtioDevice>) -> u64 {
    let memory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), VIRTIO_MEMORY as usize)]).unwrap();
    let transport = MmioTransport::new(device, 0, memory.clone(), IrqLine::disconnected(5));
    let queue_size = [256u16, 256, 16, 1, 2, 0, 512, 3][rng.below(8) as usize];
    let mut case = VirtioCase {
        rng,
        transport,
        memory,
        queue_size,
        avail: [0; 2],
    };
    let done = case.drive(100);
    // How many requests the device completed: the used rings' indexes (where the driver put
    // them). A harness whose requests never get through tests only the front door.
    for queue in 0..2 {
        let (_, _, used) = rings(queue);
        let index: u16 = case.memory.read_obj(GuestAddress(used + 2)).unwrap();
        COMPLETED.fetch_add(u64::from(index), Ordering::Relaxed);
    }
    done
}

/// Requests virtio devices completed, over all cases (a figure, and a check of the harness).
static COMPLETED: AtomicU64 = AtomicU64::new(0);

fn rng_case(rng: &mut Rng) -> u64 {
    virtio_case(rng, Box::new(crate::devices::virtio::rng::Rng::new()))
}

/// A fresh temporary image of [`IMAGE_SIZE`] bytes, sometimes read-only; after the case its
/// length must be unchanged: nothing was written past its end.
fn block_case(rng: &mut Rng) -> u64 {
    let file = tempfile_image();
    let read_only = rng.chance(4);
    let block = Block::new(file.try_clone().unwrap(), IMAGE_SIZE, read_only, "fuzz.img");
    let done = virtio_case(rng, Box::new(block));
    let length = file.metadata().unwrap().len();
    assert_eq!(
        length, IMAGE_SIZE,
        "the image grew (or shrank) to {length} bytes"
    );
    done
}

/// A temporary file of IMAGE_SIZE bytes, unlinked at once (it goes when closed).
fn tempfile_image() -> File {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "mini-kvm-fuzz-{}-{}.img",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(IMAGE_SIZE).unwrap();
    file
}

// ---------------------------------------------------------------------------------------------
// The tests: a short slice in `cargo test`, the long run behind #[ignore].

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

/// virtio-net on a real TAP device, in a network namespace of a thread of its own (as
/// virtio/tests.rs does): frames the guest transmits leave through it; a host socket sends
/// frames back now and then, for the receive queue. Needs root.
fn net_run(cases: u64) -> Figures {
    use crate::devices::virtio::net::{HEADER_SIZE, Net};
    use crate::devices::virtio::tap::Tap;
    use crate::devices::virtio::tests::{bring_up, packet_socket};
    std::thread::spawn(move || {
        // SAFETY: unshare(2) moves only this thread into a new network namespace.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            unshared,
            0,
            "this test needs root, for a network namespace and a TAP device: {}",
            std::io::Error::last_os_error()
        );
        run("virtio-net", 0x6e6574, cases, |rng| {
            // A fresh TAP device per case (it goes when the case's Net closes it), up, with a
            // host socket on it.
            let tap = Tap::open("mkvmfz0", HEADER_SIZE).unwrap();
            bring_up("mkvmfz0");
            let socket = packet_socket("mkvmfz0");
            let host = std::os::fd::AsRawFd::as_raw_fd(&socket);
            let frames = rng.below(4);
            for _ in 0..frames {
                let len = 14 + rng.below(1500) as usize;
                let mut frame = rng.bytes(len);
                frame[..6].fill(0xff);
                // SAFETY: send from `frame`, its length.
                unsafe { libc::send(host, frame.as_ptr().cast(), frame.len(), 0) };
            }
            virtio_case(
                rng,
                Box::new(Net::new(tap, [0x52, 0x54, 0, 0x12, 0x34, 0x56])),
            )
        })
    })
    .join()
    .unwrap()
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
