//! One guest = one KVM VM: its memory, its devices, its vCPUs.
//!
//! [`Vm::create`] builds the machine in the order docs/kvm-api.md walks through: the VM, its
//! RAM and image, the interrupt controllers, the vCPUs, the firmware tables, the devices.
//! [`Vm::run`] starts a thread per vCPU (vcpus.rs) and runs the VM's event loop
//! (event_loop.rs) on its own thread: it feeds the guest's input as fast as the guest takes it,
//! flushes the guest's output, enforces `--timeout`, and notices a guest that can never run
//! again.

use std::io::Write;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_pit_config;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::coalesced::OutputCoalescing;
use super::debug::{DebugControl, DebugStub, DebugTarget, HostDebugSupport};
use super::device_manager::{AttachedDevices, DeviceError, DeviceInfo, DeviceManager};
use super::event_loop::{EventHandler, EventLoop, Token};
use super::kvm::{self, KvmError};
use super::memory::{
    LoggedSlot, MemoryError, MemorySlots, create_guest_memory, range_is_ram,
    register_logged_region, register_memory_slots, register_memory_slots_logging,
};
use super::outcome::{AllCpus, GuestOutcome};
use super::seccomp::{self, Role, SeccompError};
use super::stats::{ExitStats, LiveCounters};
use super::vcpu::{Vcpu, VcpuEnd, VcpuOptions};
use super::vcpu_control::VcpuControl;
use super::vcpus::{Joined, VcpuSet};
use super::virtio::attach_virtio;
use crate::arch::x86::acpi::{self, AcpiError};
use crate::arch::x86::layout::{self, REAL_MODE_SEGMENT};
use crate::arch::x86::modes::{
    CR0_PG, EFER_LMA, setup_long_mode, setup_protected_mode, setup_real_mode,
};
use crate::arch::x86::{cpuid, gdt, mptable, paging};
use crate::arch::{ArchError, CpuMode};
use crate::config::ConfigError;
use crate::console::{GuestInput, GuestIo, GuestOutput, SourceState};
use crate::devices::acpi_pm::{ACPI_PM_PORTS, AcpiPm, POWER_PORTS};
use crate::devices::display::vbe::{BochsVbe, DISPI_PORTS, SharedMode};
use crate::devices::display::vga_text::{CRTC_PORTS, CrtController, Cursor};
use crate::devices::display::{Display, DisplayParts};
use crate::devices::fw_cfg::{FW_CFG_PORTS, FwCfg, MachineFacts, e820_file};
use crate::devices::hypercall::{HYPERCALL_PORT, HypercallDoorbell, HypercallHandler};
use crate::devices::legacy::debug_exit::{DEBUG_EXIT_PORTS, DebugExit};
use crate::devices::legacy::debugcon::{DEBUGCON_PORT, DebugConsole};
use crate::devices::legacy::i8042::{self, I8042, KEYBOARD_IRQ};
use crate::devices::legacy::serial::{COM1_IRQ, COM1_PORTS, Uart};
use crate::devices::virtio::VirtioDevice;
use crate::devices::{BusRange, GuestStop, bus};
use crate::loader::multiboot::VideoMode;
use crate::loader::{self, BootProtocol, Entry, GuestMode, LoadOptions, LoaderError};

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Disk(#[from] crate::devices::virtio::block::DiskError),
    #[error(transparent)]
    Tap(#[from] crate::devices::virtio::tap::TapError),
    #[error("{call} failed: {source}")]
    Ioctl {
        call: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("the host KVM lacks {0}, which mini-kvm needs")]
    MissingCapability(&'static str),
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    #[error(
        "the host KVM ({module}) cannot run 32-bit paging: KVM_SET_SREGS dropped CR0.PG, and a \
         guest that sets it itself would triple-fault. kvm_pvm, a software KVM, runs only real \
         mode, protected mode without paging and long mode. Run this guest where KVM has hardware \
         virtualization (kvm_intel, kvm_amd), e.g. in the hardware-KVM rig (tests/hw-kvm/run)"
    )]
    NoPagingSupport { module: &'static str },
    #[error(
        "--cpus {asked}: this host's KVM allows at most {host} vCPUs in a VM, and mini-kvm at most \
         {ours} (what its MP table describes): give --cpus 1 to {limit}",
        limit = (*host).min(*ours)
    )]
    TooManyCpus {
        asked: usize,
        host: usize,
        ours: usize,
    },
    #[error("cannot start a vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("the VM's event loop failed: {0}")]
    EventLoop(std::io::Error),
    #[error("a vCPU thread of guest '{0}' panicked (a bug in mini-kvm: please report it)")]
    VcpuPanicked(String),
    #[error(
        "{option} needs a terminal, and {missing}: run it in a terminal, or leave out {option}"
    )]
    TuiWithoutTerminal {
        /// `--tui` or `--display`.
        option: &'static str,
        missing: &'static str,
    },
    #[error("the terminal view failed: {0}")]
    Terminal(std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(
        "a display needs guest RAM up to 0xc0000 (the VGA text buffer is at 0xb8000), and this \
         guest has {} KiB: give it --mem 1M or more",
        ram >> 10
    )]
    DisplayNeedsRam { ram: u64 },
    /// `--gdb` could not listen (the message says where and why).
    #[error("{0}")]
    Debugger(String),
}

fn ioctl(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { call, source }
}

/// The most vCPUs mini-kvm gives one VM: as many as its MP table describes.
pub const MAX_CPUS: usize = mptable::MAX_CPUS;

/// Everything needed to build one guest.
pub struct GuestSetup<'a> {
    /// The guest's name, for messages.
    pub name: &'a str,
    pub image: &'a [u8],
    /// The mode of a flat binary, the kernel command line.
    pub load: LoadOptions<'a>,
    pub memory_size: u64,
    /// `--cpus`: the number of vCPUs (1 and up).
    pub cpus: usize,
    /// `--irqchip`: give a real-mode guest the in-kernel interrupt controller and PIT too (every
    /// other guest has them anyway, and so does a guest with several CPUs).
    pub irqchip: bool,
    /// `--verbose`: trace every exit and hypercall on stderr.
    pub verbose: bool,
    /// Put before each trace line (the guest's label when several guests run), or "".
    pub trace_label: &'a str,
    /// Coalesce the writes to output-only ports (no `--no-coalesce`).
    pub coalesce: bool,
    /// Put each thread of the run under its seccomp filter (src/vmm/seccomp.rs).
    pub seccomp: bool,
    /// The virtio devices (`--disk`, `--rng`), in slot order (vmm/virtio.rs).
    pub virtio: Vec<Box<dyn VirtioDevice>>,
    /// `--gdb`: the debugger front end, listening already (src/gdb/).
    pub debug: Option<Box<dyn DebugStub>>,
    /// `--display`, `--screen-dump`, `--screenshot`: the display adapter (VGA text mode's window
    /// and cursor, the Bochs VBE framebuffer), its memory logged for the view.
    pub display: bool,
}

/// How a run went.
pub struct RunReport {
    pub outcome: GuestOutcome,
    /// With a display: its screen, as the guest left it.
    pub display: Option<Display>,
    /// The counts of all the guest's vCPUs together.
    pub stats: ExitStats,
}

pub struct Vm {
    name: String,
    /// Kept open for the VM's lifetime; closing it (on drop) destroys the VM.
    _vm_fd: Arc<VmFd>,
    vcpus: Vec<Vcpu>,
    control: Arc<VcpuControl>,
    devices: Vec<DeviceInfo>,
    /// Device work for the event loop (ioeventfds and the like).
    event_handlers: Vec<Box<dyn EventHandler>>,
    output: GuestOutput,
    input: GuestInput,
    live: Arc<LiveCounters>,
    /// Filter each thread once the guest runs (src/vmm/seccomp.rs).
    seccomp: bool,
    /// A Linux guest's memory, where its kernel leaves the warm-reset flag when it panics.
    linux_memory: Option<GuestMemoryMmap>,
    /// `--gdb`: the stub and the controls it drives the vCPUs with.
    debugger: Option<(Box<dyn DebugStub>, DebugTarget)>,
    /// The display adapter's screen, for the views.
    display: Option<Display>,
}

impl Vm {
    /// Creates the VM, its memory, its devices and its vCPUs, and loads the image.
    pub fn create(kvm: &Kvm, setup: GuestSetup, io: GuestIo) -> Result<Vm, VmError> {
        // 2. What the host must offer: the hypercall path reads and writes registers through
        // kvm_run (see vcpu.rs); and enough vCPUs.
        if kvm.check_extension_int(Cap::SyncRegs) & 0b11 != 0b11 {
            return Err(VmError::MissingCapability("KVM_CAP_SYNC_REGS"));
        }
        let host_max = kvm.get_max_vcpus();
        if setup.cpus == 0 || setup.cpus > host_max.min(MAX_CPUS) {
            return Err(VmError::TooManyCpus {
                asked: setup.cpus,
                host: host_max,
                ours: MAX_CPUS,
            });
        }

        if setup.seccomp {
            seccomp::prepare()?;
        }

        // 3. KVM_CREATE_VM: an empty machine, no memory, no CPUs.
        let vm_fd = Arc::new(kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?);

        // 4. Guest RAM: map it in our process, load the image, give it to KVM (one slot per
        // region: below the MMIO hole, and above 4 GiB).
        let memory = create_guest_memory(setup.memory_size)?;
        let entry = loader::load(&memory, setup.name, setup.image, &setup.load)?;
        // (Real mode, the default, goes unmentioned: its traces stay as they were.)
        if setup.verbose && entry.mode != GuestMode::Real {
            let _ = writeln!(
                crate::console::stderr::stderr(),
                "mini-kvm: '{}' is a {}: starting in {}",
                setup.name,
                entry.protocol,
                entry.mode.name()
            );
        }
        // With a display, the text buffer's pages get a slot of their own, and the framebuffer
        // one more: both logged, so that the view redraws what changed (devices/display/).
        let display_memory = if setup.display {
            Some(register_display_memory(&vm_fd, &memory)?)
        } else {
            register_memory_slots(&vm_fd, &memory).map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
            None
        };

        // 5. The in-kernel interrupt controllers (PIC, IOAPIC, a local APIC per vCPU) and the PIT.
        // After the memory region, not before: measured on kvm_pvm, open → first KVM_RUN takes
        // ~0.7 ms this way and ~7 ms with the irqchip created first (benches/irqchip_order.rs).
        // Before the vCPUs: KVM gives a vCPU its local APIC only if the irqchip exists.
        let irqchip = entry.mode != GuestMode::Real || setup.irqchip || setup.cpus > 1;
        if irqchip {
            vm_fd
                .create_irq_chip()
                .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
            vm_fd
                .create_pit2(kvm_pit_config::default())
                .map_err(ioctl("KVM_CREATE_PIT2"))?;
        }

        // 6-7. KVM_CREATE_VCPU for each CPU, its CPUID, and the boot CPU's registers: the CPU
        // mode the guest starts in. With the irqchip, the other CPUs wait (inside KVM_RUN) for
        // the INIT and SIPI a guest sends them through its local APIC, as on a real PC.
        let vcpu_fds = create_vcpus(kvm, &vm_fd, setup.cpus, irqchip)?;
        set_entry_registers(&vcpu_fds[0], &memory, &entry)?;
        // The MP table tells the guest its CPUs and IOAPIC (there is none without the irqchip).
        if irqchip {
            mptable::write(&memory, setup.cpus)?;
        }

        // 8. Devices on the buses, with their interrupt lines.
        let mut devices = DeviceManager::new(Arc::clone(&vm_fd), irqchip);
        let facts = MachineFacts {
            ram_size: loader::ram_size(&memory),
            // At most MAX_CPUS (181), checked above.
            cpus: setup.cpus as u16,
            cmdline: setup.load.cmdline.map(String::from),
            files: vec![(
                "etc/e820".into(),
                e820_file(&e820_map(&memory, entry.protocol)),
            )],
            graphics: setup.display,
        };
        attach_devices(&mut devices, &io, &facts, entry.protocol)?;
        let display = match display_memory {
            Some(display_memory) => Some(attach_display(
                &mut devices,
                &memory,
                display_memory,
                entry.video,
            )?),
            None => None,
        };
        attach_virtio(&mut devices, &memory, setup.virtio)?;
        // A Linux kernel learns its CPUs, interrupt controllers and devices from ACPI tables,
        // which firmware would write on a PC: here, now that the devices are known.
        if entry.protocol.is_linux() {
            let described: Vec<_> = devices
                .devices()
                .iter()
                .filter_map(DeviceInfo::acpi_device)
                .collect();
            acpi::write(&memory, setup.cpus, &described, POWER_PORTS)?;
        }
        let coalescing = if setup.coalesce && kvm.check_extension(Cap::CoalescedPio) {
            OutputCoalescing::new(&vm_fd, devices.coalesced_ports())
        } else {
            None
        };
        let AttachedDevices {
            buses,
            devices: device_info,
            event_handlers,
        } = devices.finish();
        let buses = Arc::new(buses);

        let live = Arc::new(LiveCounters::default());
        let control = VcpuControl::shared(setup.cpus);
        let debugger = setup.debug.map(|stub| {
            let control = Arc::new(DebugControl::new(
                setup.cpus,
                host_debug_support(kvm),
                super::vcpus::kick_thread,
            ));
            let target = DebugTarget {
                name: setup.name.to_string(),
                control,
                widest_mode: widest_mode(setup.image, &entry),
                seccomp: setup.seccomp,
            };
            (stub, target)
        });
        let started = Instant::now();
        let several = setup.cpus > 1;
        let mut vcpus = Vec::with_capacity(setup.cpus);
        for (index, mut fd) in vcpu_fds.into_iter().enumerate() {
            // Every vCPU maps the VM's coalesced ring, to drain it after its own exits.
            let coalescing = coalescing
                .clone()
                .filter(|_| fd.map_coalesced_mmio_ring().is_ok());
            let trace_label = if several {
                format!("{}[cpu {index}] ", setup.trace_label)
            } else {
                setup.trace_label.to_string()
            };
            let hypercalls = HypercallHandler::new(
                memory.clone(),
                io.output.clone(),
                io.input.clone(),
                started,
                setup.verbose.then(|| trace_label.clone()),
            );
            let options = VcpuOptions {
                trace: setup.verbose.then_some(trace_label),
                coalescing,
                debug: debugger
                    .as_ref()
                    .map(|(_, target)| Arc::clone(&target.control)),
            };
            vcpus.push(Vcpu::new(
                index,
                fd,
                memory.clone(),
                Arc::clone(&buses),
                hypercalls,
                Arc::clone(&control),
                options,
                Arc::clone(&live),
            ));
        }
        Ok(Vm {
            name: setup.name.to_string(),
            _vm_fd: vm_fd,
            vcpus,
            control,
            devices: device_info,
            event_handlers,
            output: io.output,
            input: io.input,
            live,
            seccomp: setup.seccomp,
            linux_memory: entry.protocol.is_linux().then_some(memory),
            debugger,
            display,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is attached to the machine (for firmware tables and `--verbose`).
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// The display, for a view that shows it while the guest runs.
    pub fn display(&self) -> Option<Display> {
        self.display.clone()
    }

    /// Counters that other threads may read while the guest runs (the `--tui` view).
    pub fn live_counters(&self) -> Arc<LiveCounters> {
        Arc::clone(&self.live)
    }

    /// Runs the guest to its end, a thread per vCPU. With a `timeout`, a guest still running
    /// then is stopped; so is a guest still running when another thread sets `cancel` or `quit`
    /// (Ctrl-A x).
    pub fn run(
        self,
        timeout: Option<Duration>,
        cancel: &AtomicBool,
        quit: &AtomicBool,
    ) -> Result<RunReport, VmError> {
        let Vm {
            name,
            _vm_fd,
            vcpus,
            control,
            output,
            input,
            live,
            event_handlers,
            seccomp,
            debugger,
            display,
            ..
        } = self;
        let several = vcpus.len() > 1;
        let started = Instant::now();
        // The debugger's stub serves gdb on a thread of its own; the vCPUs wait for it, parked.
        let debugging = match debugger {
            Some((stub, target)) => {
                let control = Arc::clone(&target.control);
                let thread = thread::Builder::new()
                    .name(format!("gdb-{name}"))
                    .spawn(move || stub.serve(target))
                    .map_err(VmError::Thread)?;
                Some((control, thread))
            }
            None => None,
        };
        let mut watcher = Watcher::new(timeout, event_handlers).map_err(VmError::EventLoop)?;
        let (mut set, first_cpu) = match VcpuSet::start(vcpus, control, &name, seccomp) {
            Ok(started) => started,
            Err(error) => {
                if let Some((control, thread)) = debugging {
                    end_debugging(&control, thread, super::outcome::exit_code::SETUP_ERROR);
                }
                return Err(VmError::Thread(error));
            }
        };
        // vCPU 0 runs on this thread (vcpus.rs says why); the event loop on a thread of its
        // own, which also stops every vCPU once the guest is over.
        let (first_end, watched) = thread::scope(|scope| {
            let events = thread::Builder::new()
                .name(format!("events-{name}"))
                .spawn_scoped(scope, || {
                    if seccomp {
                        seccomp::install_or_exit(Role::EventLoop);
                    }
                    let watched = watcher.watch(&mut set, &live, &output, &input, cancel, quit);
                    let stopped_by = *watched.as_ref().unwrap_or(&Some(StoppedBy::Cancel));
                    if stopped_by.is_some_and(|why| why != StoppedBy::Idle) {
                        // Output nobody can take now is dropped rather than waited for: the
                        // guest's, and mini-kvm's own messages (a vCPU tracing to a stderr
                        // nobody reads must not keep the run past its --timeout).
                        output.stop();
                        crate::console::stderr::stop_waiting();
                    }
                    // A vCPU may wait for input in GETCHAR: end that wait, then stop them all.
                    // The stop request comes first, so that the guest, woken with end of input,
                    // cannot run on and end by itself (`echo` would exit 0 at its --timeout).
                    set.request_stop();
                    input.cancel();
                    set.stop();
                    watched
                });
            match events {
                Ok(events) => {
                    let first_end = first_cpu.run();
                    let watched = events.join().unwrap_or(Ok(Some(StoppedBy::Cancel)));
                    Ok((first_end, watched))
                }
                Err(error) => Err(error),
            }
        })
        .map_err(|error| {
            set.stop();
            VmError::Thread(error)
        })?;
        let stopped_by = *watched.as_ref().unwrap_or(&Some(StoppedBy::Cancel));
        let Joined { ends, end_order } = set
            .join(first_end)
            .ok_or_else(|| VmError::VcpuPanicked(name.clone()))?;
        output.finish();
        watched.map_err(VmError::EventLoop)?;

        let mut stats = ExitStats::default();
        for (_, vcpu) in &ends {
            stats.merge(vcpu.stats());
        }
        let outcome = match decide_outcome(ends, &end_order, stopped_by, timeout, started, several)
        {
            GuestOutcome::Rebooted if self.linux_memory.as_ref().is_some_and(kernel_panicked) => {
                GuestOutcome::KernelPanic
            }
            outcome => outcome,
        };
        if let Some((control, thread)) = debugging {
            end_debugging(&control, thread, outcome.exit_code());
        }
        live.finish(outcome.exit_code(), outcome.short_description());
        Ok(RunReport {
            outcome,
            stats,
            display,
        })
    }
}

/// The display's memory: the text window's logged slot, the framebuffer and its logged slot.
struct DisplayMemory {
    text_log: LoggedSlot,
    framebuffer: GuestMemoryMmap,
    framebuffer_log: LoggedSlot,
}

/// Gives RAM to KVM with the VGA text window in a logged slot of its own, then the framebuffer
/// (16 MiB at `FRAMEBUFFER_ADDRESS`, in the MMIO hole, mapped with `MAP_NORESERVE` like RAM).
fn register_display_memory(
    vm_fd: &Arc<VmFd>,
    memory: &GuestMemoryMmap,
) -> Result<DisplayMemory, VmError> {
    let window = (layout::VGA_TEXT_WINDOW, layout::VGA_TEXT_WINDOW_SIZE);
    if !range_is_ram(memory, window.0, window.1) {
        return Err(VmError::DisplayNeedsRam {
            ram: loader::ram_size(memory),
        });
    }
    let mut slots = MemorySlots::default();
    let text_log = register_memory_slots_logging(vm_fd, memory, window, &mut slots)
        .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    let framebuffer = GuestMemoryMmap::from_ranges(&[(
        GuestAddress(layout::FRAMEBUFFER_ADDRESS),
        layout::FRAMEBUFFER_SIZE as usize,
    )])
    .map_err(|source| MemoryError::Map {
        size: layout::FRAMEBUFFER_SIZE,
        source,
    })?;
    let framebuffer_log = register_logged_region(vm_fd, &framebuffer, &mut slots)
        .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    Ok(DisplayMemory {
        text_log,
        framebuffer,
        framebuffer_log,
    })
}

/// The display adapter's two devices, the CRT controller (the text cursor) and the Bochs VBE
/// registers; and the mode a multiboot kernel asked for, set before it starts.
fn attach_display(
    devices: &mut DeviceManager,
    memory: &GuestMemoryMmap,
    display_memory: DisplayMemory,
    video: Option<VideoMode>,
) -> Result<Display, VmError> {
    let cursor = Arc::new(Cursor::default());
    let crtc = CrtController::new(Arc::clone(&cursor));
    devices.attach_ports(bus::shared(crtc), &[(CRTC_PORTS, 0)], None)?;
    let mode = SharedMode::default();
    let mut vbe = BochsVbe::new(display_memory.framebuffer.clone(), Arc::clone(&mode));
    if let Some(video) = video {
        vbe.set_mode(video.width, video.height, video.bits_per_pixel);
    }
    devices.attach_ports(bus::shared(vbe), &[(DISPI_PORTS, 0)], None)?;
    Ok(Display::new(DisplayParts {
        ram: memory.clone(),
        cursor,
        framebuffer: display_memory.framebuffer,
        mode,
        text_log: Box::new(display_memory.text_log),
        framebuffer_log: Box::new(display_memory.framebuffer_log),
    }))
}

/// Tells the debugger the guest has ended, and waits for its thread: gdb hears the exit status
/// if it was waiting for the guest, and sees its connection close if it sat at its prompt (the
/// guest timed out while stopped).
fn end_debugging(control: &DebugControl, thread: thread::JoinHandle<()>, status: u8) {
    control.guest_ended(status);
    let _ = thread.join();
}

/// The widest mode a guest runs in, as far as its image tells: a 64-bit ELF file or a Linux
/// kernel goes to long mode even when it starts in protected mode. (gdb's register set.)
fn widest_mode(image: &[u8], entry: &Entry) -> CpuMode {
    const ELF64: &[u8] = b"\x7fELF\x02";
    match entry.mode {
        GuestMode::Long => CpuMode::Long64,
        _ if entry.protocol.is_linux() || image.starts_with(ELF64) => CpuMode::Long64,
        GuestMode::Real => CpuMode::Real,
        GuestMode::Protected { .. } => CpuMode::Protected32,
    }
}

/// What the host's KVM offers a debugger (docs/gdb.md): tried in scratch VMs, as KVMs differ
/// (kvm_pvm stops at neither `int3` nor a watchpoint, but at a debug register's instruction).
fn host_debug_support(kvm: &Kvm) -> HostDebugSupport {
    let flags = kvm.check_extension_raw(kvm_bindings::KVM_CAP_SET_GUEST_DEBUG2.into()) as u32;
    HostDebugSupport {
        probed: super::debug::probe_debug_support(kvm),
        block_irq: flags & kvm_bindings::KVM_GUESTDBG_BLOCKIRQ != 0,
    }
}

/// Why the watcher stopped the vCPUs, when no vCPU ended the guest itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoppedBy {
    Timeout,
    Cancel,
    Quit,
    /// Every CPU halted with interrupts off (or never started): nothing can wake the guest.
    Idle,
}

/// The event loop of a running VM (event_loop.rs), with its two times: the next flush tick and
/// the `--timeout` deadline, which bound each wait (no timer descriptors to create per VM).
struct Watcher {
    events: EventLoop,
    /// Device work, each registered as `Token::Device(its index)`.
    handlers: Vec<Box<dyn EventHandler>>,
    next_tick: Instant,
    deadline: Option<Instant>,
    /// The input source's descriptor while the loop polls it.
    polled_input: Option<RawFd>,
}

impl Watcher {
    // Partial output lines are flushed now and then, so that a prompt or a progress line shows
    // up even before its newline.
    const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
    // With the irqchip, `hlt` waits inside KVM and never tells us. A guest that has made no
    // exit for IDLE_CHECK is paused and looked at: if every CPU is halted with interrupts off,
    // it has ended. A vCPU busy in the VMM (waiting for input) does not pause in PATIENCE.
    const IDLE_CHECK: Duration = Duration::from_secs(1);
    const PATIENCE: Duration = Duration::from_millis(100);

    /// Everything that can fail is made here, before any vCPU runs.
    fn new(
        timeout: Option<Duration>,
        handlers: Vec<Box<dyn EventHandler>>,
    ) -> std::io::Result<Watcher> {
        let now = Instant::now();
        let events = EventLoop::new()?;
        for (index, handler) in handlers.iter().enumerate() {
            let token = Token::Device(index as u32);
            if handler.edge_triggered() {
                events.add_edge_triggered(handler.fd(), token)?;
            } else {
                events.add(handler.fd(), token)?;
            }
        }
        Ok(Watcher {
            events,
            handlers,
            next_tick: now + Self::FLUSH_INTERVAL,
            deadline: timeout.map(|limit| now + limit),
            polled_input: None,
        })
    }

    /// Waits until a vCPU ends the guest (`None`), or the watcher stops it (why).
    fn watch(
        &mut self,
        set: &mut VcpuSet,
        live: &LiveCounters,
        output: &GuestOutput,
        input: &GuestInput,
        cancel: &AtomicBool,
        quit: &AtomicBool,
    ) -> std::io::Result<Option<StoppedBy>> {
        self.events.add(set.end_fd(), Token::VcpuEnded)?;
        if let Some(wake) = input.wake_fd() {
            self.events.add(wake, Token::InputWake)?;
        }
        let mut exits_seen = live.exits();
        let mut idle_since = Instant::now();
        loop {
            if cancel.load(Ordering::Acquire) {
                return Ok(Some(StoppedBy::Cancel));
            }
            if quit.load(Ordering::Acquire) {
                return Ok(Some(StoppedBy::Quit));
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|deadline| now >= deadline) {
                return Ok(Some(StoppedBy::Timeout));
            }
            if now >= self.next_tick {
                self.next_tick = now + Self::FLUSH_INTERVAL;
                output.flush_without_waiting();
                let exits = live.exits();
                if exits != exits_seen {
                    exits_seen = exits;
                    idle_since = now;
                } else if idle_since.elapsed() >= Self::IDLE_CHECK {
                    if let Some(cpus) = set.pause(Self::PATIENCE) {
                        if cpus.iter().all(|cpu| cpu.is_idle_for_good()) {
                            return Ok(Some(StoppedBy::Idle));
                        }
                        set.resume();
                    }
                    idle_since = Instant::now();
                }
            }
            let next_time = self
                .deadline
                .map_or(self.next_tick, |d| d.min(self.next_tick));
            let mut wait = next_time.saturating_duration_since(Instant::now());
            if let Some(input_wait) = self.follow_input(input) {
                wait = wait.min(input_wait);
            }
            for token in self.events.wait(Some(wait))? {
                match token {
                    Token::VcpuEnded => {
                        if set.take_ends() {
                            return Ok(None);
                        }
                    }
                    Token::InputReadable => input.fill(),
                    Token::InputWake => input.clear_wake(),
                    Token::Device(index) => {
                        if let Some(handler) = self.handlers.get_mut(index as usize) {
                            handler.ready();
                        }
                    }
                }
            }
        }
    }

    /// Polls the input source while the guest wants input and has room for it, and stops
    /// polling otherwise (back-pressure). Returns how long the next wait may block: not at
    /// all when the source is always ready (a file), which is then read once per turn.
    fn follow_input(&mut self, input: &GuestInput) -> Option<Duration> {
        let state = input.source_state();
        let wanted = match state {
            SourceState::Poll(fd) => Some(fd),
            SourceState::Ready | SourceState::Idle => None,
        };
        if self.polled_input != wanted {
            if let Some(fd) = self.polled_input.take() {
                let _ = self.events.remove(fd);
            }
            if let Some(fd) = wanted {
                match self.events.add(fd, Token::InputReadable) {
                    Ok(()) => self.polled_input = Some(fd),
                    // epoll refuses regular files and /dev/null, which never block: read them
                    // whenever there is room.
                    Err(_) => input.source_is_always_ready(),
                }
            }
        }
        if state == SourceState::Ready {
            input.fill();
            return Some(Duration::ZERO);
        }
        None
    }
}

/// Did a Linux guest's reset come from a panic? On x86 the kernel writes the BIOS's warm-reset
/// flag (0x1234 at 0x472) just before every reset, when the reboot mode is "warm"; the default
/// command line's `reboot=panic_warm` makes it warm for a panic alone (`panic=-1`: reset at
/// once), so 0x1234 there means this reset is the panic's.
fn kernel_panicked(memory: &GuestMemoryMmap) -> bool {
    memory
        .read_obj::<u16>(GuestAddress(layout::BIOS_WARM_RESET_FLAG))
        .is_ok_and(|flag| flag == layout::WARM_RESET)
}

/// How the guest ended: as the first vCPU that ended it says, or else as the watcher stopped it.
fn decide_outcome(
    ends: Vec<(VcpuEnd, Vcpu)>,
    end_order: &[usize],
    stopped_by: Option<StoppedBy>,
    timeout: Option<Duration>,
    started: Instant,
    several: bool,
) -> GuestOutcome {
    let mut ends: Vec<Option<VcpuEnd>> = ends.into_iter().map(|(end, _)| Some(end)).collect();
    let first = end_order
        .iter()
        .copied()
        .find(|&index| !matches!(ends[index], Some(VcpuEnd::Interrupted(_)) | None));
    if let Some(index) = first {
        return match ends[index].take() {
            Some(VcpuEnd::Stopped(GuestStop::Exit(status))) => GuestOutcome::Exited(status),
            Some(VcpuEnd::Stopped(GuestStop::Reboot)) => GuestOutcome::Rebooted,
            Some(VcpuEnd::Stopped(GuestStop::PowerOff)) => GuestOutcome::PoweredOff,
            Some(VcpuEnd::Halted) => GuestOutcome::Halted,
            Some(VcpuEnd::Killed) => GuestOutcome::Killed,
            Some(VcpuEnd::Faulted(fault, cpu)) => GuestOutcome::Faulted {
                fault,
                cpu,
                on_cpu: several.then_some(index),
            },
            Some(VcpuEnd::Interrupted(_)) | None => unreachable!("found above"),
        };
    }
    let cpus: AllCpus = ends
        .into_iter()
        .filter_map(|end| match end {
            Some(VcpuEnd::Interrupted(cpu)) => Some(cpu),
            _ => None,
        })
        .collect();
    match stopped_by {
        Some(StoppedBy::Idle) => GuestOutcome::Halted,
        Some(StoppedBy::Quit) => GuestOutcome::Quit,
        Some(StoppedBy::Timeout) => GuestOutcome::TimedOut {
            // The limit, not the measured time, which a loaded machine stretches.
            after: timeout.unwrap_or_else(|| started.elapsed()),
            cpus,
        },
        Some(StoppedBy::Cancel) | None => GuestOutcome::Cancelled { cpus },
    }
}

/// The vCPUs, each with its CPUID (its APIC ID in it) when the guest has more than real mode.
fn create_vcpus(
    kvm: &Kvm,
    vm_fd: &VmFd,
    count: usize,
    irqchip: bool,
) -> Result<Vec<VcpuFd>, VmError> {
    let supported = if irqchip || count > 1 {
        Some(cpuid::supported_cpuid(kvm).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?)
    } else {
        None
    };
    (0..count)
        .map(|index| {
            let fd = vm_fd
                .create_vcpu(index as u64)
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            if let Some(supported) = &supported {
                let table = cpuid::for_vcpu(supported, index as u32, count as u32);
                fd.set_cpuid2(&table).map_err(ioctl("KVM_SET_CPUID2"))?;
            }
            Ok(fd)
        })
        .collect()
}

/// The memory map as (address, length, E820 type), for the "etc/e820" fw_cfg file: the one the
/// kernel was given (Linux's leaves out the legacy hole).
fn e820_map(memory: &GuestMemoryMmap, protocol: BootProtocol) -> Vec<(u64, u64, u32)> {
    let ram_size = loader::ram_size(memory);
    let map = if protocol.is_linux() {
        loader::linux::linux_memory_map(ram_size)
    } else {
        layout::memory_map(ram_size)
    };
    map.into_iter()
        .map(|(start, len, kind)| (start, len, kind.e820_type()))
        .collect()
}

/// The devices every guest has, at the ports of a PC. For a Linux kernel, stdin is
/// the UART's alone: the keyboard gets no input (a kernel probes it at boot, and it would
/// otherwise take typed bytes as key presses for a console nobody looks at), and the terminal
/// goes to raw mode at once, as the console is interactive from the start.
fn attach_devices(
    devices: &mut DeviceManager,
    io: &GuestIo,
    facts: &MachineFacts,
    protocol: BootProtocol,
) -> Result<(), VmError> {
    let com1 = devices.legacy_irq(COM1_IRQ, "uart")?;
    let uart = Uart::new(io.output.clone(), io.input.clone(), com1);
    devices.attach_ports(bus::shared(uart), &[(COM1_PORTS, 0)], Some(COM1_IRQ))?;

    let debugcon = DebugConsole::new(io.output.clone());
    devices.attach_ports(bus::shared(debugcon), &[(DEBUGCON_PORT, 0)], None)?;

    // 0x61, between the i8042's two ports, is the PC speaker gate: left unclaimed (with the
    // irqchip, KVM's PIT answers it in the kernel).
    let keyboard_irq = devices.legacy_irq(KEYBOARD_IRQ, "i8042")?;
    let keyboard_input = if protocol.is_linux() {
        io.input.keyboard_claimed();
        GuestInput::none()
    } else {
        io.input.clone()
    };
    let keyboard = I8042::new(keyboard_input, keyboard_irq);
    devices.attach_ports(
        bus::shared(keyboard),
        &[
            (i8042::I8042_DATA_PORT, i8042::DATA),
            (i8042::I8042_COMMAND_PORT, i8042::COMMAND),
        ],
        Some(KEYBOARD_IRQ),
    )?;

    devices.attach_ports(bus::shared(DebugExit), &[(DEBUG_EXIT_PORTS, 0)], None)?;
    // The power-off and reset registers the ACPI tables point a kernel at.
    devices.attach_ports(bus::shared(AcpiPm), &[(ACPI_PM_PORTS, 0)], None)?;
    // QEMU's firmware configuration: what guests written for QEMU ask the machine.
    let fw_cfg = FwCfg::new(facts);
    devices.attach_ports(bus::shared(fw_cfg), &[(FW_CFG_PORTS, 0)], None)?;
    let doorbell = BusRange::new(u64::from(HYPERCALL_PORT), 1);
    devices.attach_ports(bus::shared(HypercallDoorbell), &[(doorbell, 0)], None)?;
    Ok(())
}

/// Writes the tables the entry mode needs (GDT, TSS, page tables) and sets the vCPU's registers.
fn set_entry_registers(
    vcpu_fd: &VcpuFd,
    memory: &GuestMemoryMmap,
    entry: &Entry,
) -> Result<(), VmError> {
    let mut sregs = vcpu_fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let mut regs = vcpu_fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    let ram_size = loader::ram_size(memory);
    match entry.mode {
        GuestMode::Real => setup_real_mode(&mut sregs, &mut regs, REAL_MODE_SEGMENT),
        GuestMode::Protected { paging } => {
            gdt::write_gdt_and_tss(memory)?;
            let page_directory = if paging {
                Some(paging::write_pse_tables(memory, ram_size)?)
            } else {
                None
            };
            setup_protected_mode(&mut sregs, &mut regs, &entry.registers, page_directory);
        }
        GuestMode::Long => {
            gdt::write_gdt_and_tss(memory)?;
            let pml4 = paging::write_long_mode_tables(memory, ram_size)?;
            setup_long_mode(&mut sregs, &mut regs, &entry.registers, pml4);
        }
    }
    vcpu_fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    vcpu_fd.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;

    // KVM_SET_SREGS does not fail when the host cannot do 32-bit paging: kvm_pvm silently drops
    // CR0.PG outside long mode. Read it back, and refuse to start a guest that would not run.
    if sregs.cr0 & CR0_PG != 0 && sregs.efer & EFER_LMA == 0 {
        let actual = vcpu_fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        if actual.cr0 & CR0_PG == 0 {
            return Err(VmError::NoPagingSupport {
                module: kvm::HostKvm::detect().module(),
            });
        }
    }
    Ok(())
}
