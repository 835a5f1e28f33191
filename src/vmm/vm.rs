//! One guest = one KVM VM: its memory, its devices, its vCPU thread.
//!
//! [`Vm::create`] makes the KVM calls in the order docs/kvm-api.md walks through them;
//! [`Vm::run`] runs the vCPU on its own thread and enforces `--timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_pit_config;
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::exit::GuestOutcome;
use super::kvm::{self, KvmError};
use super::memory::{MemoryError, create_guest_memory, register_memory_slots};
use super::stats::{ExitStats, LiveCounters};
use super::vcpu::{Vcpu, VcpuEnd, VcpuOptions};
use crate::arch::ArchError;
use crate::arch::x86::layout::REAL_MODE_SEGMENT;
use crate::arch::x86::modes::{
    CR0_PG, EFER_LMA, setup_long_mode, setup_protected_mode, setup_real_mode,
};
use crate::arch::x86::{cpuid, gdt, paging};
use crate::config::ConfigError;
use crate::console::{GuestInput, GuestIo, GuestOutput};
use crate::devices::bus::UnclaimedPorts;
use crate::devices::debug_exit::{DEBUG_EXIT_LAST_PORT, DEBUG_EXIT_PORT, DebugExit};
use crate::devices::debugcon::{DEBUGCON_PORT, DebugConsole};
use crate::devices::hypercall::{HYPERCALL_PORT, HypercallDevice};
use crate::devices::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use crate::devices::irq::{COM1_IRQ, KEYBOARD_IRQ};
use crate::devices::serial::{COM1_LAST_PORT, COM1_PORT, Uart};
use crate::devices::{GuestStop, IrqLine, PortBus};
use crate::loader::{self, Entry, GuestMode, LoadOptions, LoaderError};
use crate::terminal;

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
    #[error("{call} failed: {source}")]
    Ioctl {
        call: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("the host KVM lacks {0}, which mini-kvm needs")]
    MissingCapability(&'static str),
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error(
        "the host KVM ({module}) cannot run 32-bit paging: KVM_SET_SREGS dropped CR0.PG, and a \
         guest that sets it itself would triple-fault. kvm_pvm, a software KVM, runs only real \
         mode, protected mode without paging and long mode. Run this guest where KVM has hardware \
         virtualization (kvm_intel, kvm_amd), e.g. in the hardware-KVM rig (tests/hw-kvm/run)"
    )]
    NoPagingSupport { module: &'static str },
    #[error("cannot create an eventfd for an interrupt line: {0}")]
    EventFd(std::io::Error),
    #[error("cannot start the vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("the vCPU thread of guest '{0}' panicked (a bug in mini-kvm: please report it)")]
    VcpuPanicked(String),
    #[error("the terminal view failed: {0}")]
    Terminal(std::io::Error),
}

fn ioctl(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { call, source }
}

/// Everything needed to build one guest.
pub struct GuestSetup<'a> {
    /// The guest's name, for messages.
    pub name: &'a str,
    pub image: &'a [u8],
    /// The mode of a flat binary, the kernel command line.
    pub load: LoadOptions<'a>,
    pub memory_size: u64,
    /// `--irqchip`: give a real-mode guest the in-kernel interrupt controller and PIT too (every
    /// other guest has them anyway).
    pub irqchip: bool,
    /// `--verbose`: trace every exit and hypercall on stderr.
    pub verbose: bool,
    /// Put before each trace line (the guest's label when several guests run), or "".
    pub trace_label: &'a str,
    /// stdin is a terminal: raw mode once the guest uses the keyboard (src/terminal.rs).
    pub terminal: bool,
    /// Coalesce the writes to output-only ports (no `--no-coalesce`).
    pub coalesce: bool,
}

/// How a run went.
pub struct RunReport {
    pub outcome: GuestOutcome,
    pub stats: ExitStats,
    pub unclaimed: UnclaimedPorts,
}

pub struct Vm {
    name: String,
    /// Kept open for the VM's lifetime; closing it (on drop) destroys the VM.
    _vm_fd: Arc<VmFd>,
    vcpu: Vcpu,
    output: GuestOutput,
    input: GuestInput,
    live: Arc<LiveCounters>,
}

impl Vm {
    /// Creates the VM, its memory, its devices and its vCPU, and loads the image.
    pub fn create(kvm: &Kvm, setup: &GuestSetup, io: GuestIo) -> Result<Vm, VmError> {
        // 2. The hypercall path reads and writes registers through kvm_run (see vcpu.rs).
        let sync_regs = kvm.check_extension_int(Cap::SyncRegs);
        if sync_regs & 0b11 != 0b11 {
            return Err(VmError::MissingCapability("KVM_CAP_SYNC_REGS"));
        }

        // 3. KVM_CREATE_VM: an empty machine, no memory, no CPUs.
        let vm_fd = Arc::new(kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?);

        // 4. Guest RAM: map it in our process, load the image, give it to KVM (one slot per
        // region: below the MMIO hole, and above 4 GiB).
        let memory = create_guest_memory(setup.memory_size)?;
        let entry = loader::load(&memory, setup.name, setup.image, &setup.load)?;
        // (Real mode, the default, goes unmentioned: its traces stay as they were.)
        if setup.verbose && entry.mode != GuestMode::Real {
            eprintln!(
                "mini-kvm: '{}' is a {}: starting in {}",
                setup.name,
                entry.protocol,
                entry.mode.name()
            );
        }
        register_memory_slots(&vm_fd, &memory).map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;

        // 5. The in-kernel interrupt controllers (PIC, IOAPIC, a local APIC per vCPU) and the PIT.
        // After the memory region, not before: measured on kvm_pvm, open → first KVM_RUN takes
        // ~0.7 ms this way and ~7 ms with the irqchip created first (benches/irqchip_order.rs).
        // Before the vCPU: KVM gives a vCPU its local APIC only if the irqchip exists.
        let irqchip = entry.mode != GuestMode::Real || setup.irqchip;
        if irqchip {
            vm_fd
                .create_irq_chip()
                .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
            vm_fd
                .create_pit2(kvm_pit_config::default())
                .map_err(ioctl("KVM_CREATE_PIT2"))?;
        }

        // 6-7. KVM_CREATE_VCPU, then its CPUID and registers: the CPU mode the guest starts in.
        let mut vcpu_fd = vm_fd.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        if entry.mode != GuestMode::Real {
            let cpuid = cpuid::supported_cpuid(kvm).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
            vcpu_fd
                .set_cpuid2(&cpuid)
                .map_err(ioctl("KVM_SET_CPUID2"))?;
        }
        set_entry_registers(&vcpu_fd, &memory, &entry)?;

        // 8. Devices on the port-I/O bus, with their interrupt lines.
        let irq_line = |irq| connect_irq_line(&vm_fd, irq, irqchip);
        let mut keyboard = I8042::new(io.input.clone(), irq_line(KEYBOARD_IRQ)?);
        if setup.terminal {
            keyboard = keyboard.on_keyboard_claimed(Box::new(|| {
                terminal::enter_raw_mode();
            }));
        }
        let mut bus = PortBus::new();
        bus.register(
            &[(COM1_PORT, COM1_LAST_PORT)],
            Box::new(Uart::new(
                io.output.clone(),
                io.input.clone(),
                irq_line(COM1_IRQ)?,
            )),
        );
        bus.register(
            &[(DEBUGCON_PORT, DEBUGCON_PORT)],
            Box::new(DebugConsole::new(io.output.clone())),
        );
        // 0x61, between the i8042's two ports, is the PC speaker gate: left unclaimed (with the
        // irqchip, KVM's PIT answers it in the kernel).
        bus.register(
            &[
                (I8042_DATA_PORT, I8042_DATA_PORT),
                (I8042_COMMAND_PORT, I8042_COMMAND_PORT),
            ],
            Box::new(keyboard),
        );
        bus.register(
            &[(DEBUG_EXIT_PORT, DEBUG_EXIT_LAST_PORT)],
            Box::new(DebugExit),
        );
        bus.register(
            &[(HYPERCALL_PORT, HYPERCALL_PORT)],
            Box::new(HypercallDevice::new(
                memory.clone(),
                io.output.clone(),
                io.input.clone(),
                setup.verbose.then(|| setup.trace_label.to_string()),
            )),
        );

        let coalescing = if setup.coalesce {
            OutputCoalescing::new(kvm, &vm_fd, &mut vcpu_fd)
        } else {
            None
        };

        let live = Arc::new(LiveCounters::default());
        let options = VcpuOptions {
            trace: setup.verbose,
            trace_label: setup.trace_label.to_string(),
            coalescing,
        };
        Ok(Vm {
            name: setup.name.to_string(),
            _vm_fd: vm_fd,
            vcpu: Vcpu::new(vcpu_fd, memory, bus, options, Arc::clone(&live)),
            output: io.output,
            input: io.input,
            live,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters that other threads may read while the guest runs (the `--tui` view).
    pub fn live_counters(&self) -> Arc<LiveCounters> {
        Arc::clone(&self.live)
    }

    /// Runs the guest to its end on a vCPU thread. With a `timeout`, a guest still running then
    /// is stopped; so is a guest still running when another thread sets `cancel`. A signal kicks
    /// the vCPU thread out of KVM_RUN (docs/kvm-api.md, "Stopping").
    pub fn run(self, timeout: Option<Duration>, cancel: &AtomicBool) -> Result<RunReport, VmError> {
        install_kick_handler();
        let Vm {
            name,
            _vm_fd,
            mut vcpu,
            output,
            input,
            live,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let vcpu_stop = Arc::clone(&stop);
        let started = Instant::now();
        let thread = thread::Builder::new()
            .name(format!("vcpu-{name}"))
            .spawn(move || {
                let end = vcpu.run(&vcpu_stop);
                let _ = done_tx.send(());
                (end, vcpu)
            })
            .map_err(VmError::Thread)?;

        // Wait for the guest, flushing its partial output lines now and then so that a prompt
        // or a progress line shows up even before its newline.
        const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
        let mut timed_out = false;
        let mut cancelled = false;
        let mut quit = false;
        // A guest that has made no exit for IDLE_CHECK may sit in `cli; hlt` inside KVM, which
        // never tells us: kick it, and the vCPU thread looks (`halted_with_interrupts_off`).
        const IDLE_CHECK: Duration = Duration::from_secs(1);
        let mut exits_seen = live.exits();
        let mut idle_since = Instant::now();
        loop {
            if cancel.load(Ordering::Acquire) {
                cancelled = true;
                break;
            }
            if terminal::quit_requested() {
                quit = true;
                break;
            }
            let wait = match timeout {
                Some(limit) => match limit.checked_sub(started.elapsed()) {
                    Some(left) => left.min(FLUSH_INTERVAL),
                    None => {
                        timed_out = true;
                        break;
                    }
                },
                None => FLUSH_INTERVAL,
            };
            match done_rx.recv_timeout(wait) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => output.flush_without_waiting(),
            }
            let exits = live.exits();
            if exits != exits_seen {
                exits_seen = exits;
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= IDLE_CHECK {
                let _ = thread.kill(kick_signal());
                idle_since = Instant::now();
            }
        }
        if timed_out || cancelled || quit {
            stop.store(true, Ordering::Release);
            output.stop();
            input.cancel();
            // The signal may land just before the thread enters KVM_RUN, where it would be
            // missed: kick until the thread has noticed.
            while !thread.is_finished() {
                let _ = thread.kill(kick_signal());
                thread::sleep(Duration::from_millis(1));
            }
        }
        let (end, vcpu) = thread
            .join()
            .map_err(|_| VmError::VcpuPanicked(name.clone()))?;
        output.finish();
        // The guest is over: end the input threads' waits (keyboard, UART).
        input.cancel();

        let outcome = match end {
            VcpuEnd::Stopped(GuestStop::Exit(status)) => GuestOutcome::Exited(status),
            VcpuEnd::Stopped(GuestStop::Reboot) => GuestOutcome::Rebooted,
            VcpuEnd::Halted => GuestOutcome::Halted,
            VcpuEnd::Faulted(fault, cpu) => GuestOutcome::Faulted { fault, cpu },
            VcpuEnd::Interrupted(_) if quit => GuestOutcome::Quit,
            VcpuEnd::Interrupted(cpu) if cancelled => GuestOutcome::Cancelled { cpu },
            VcpuEnd::Interrupted(cpu) => GuestOutcome::TimedOut {
                // The limit, not the measured time, which a loaded machine stretches.
                after: timeout.unwrap_or_else(|| started.elapsed()),
                cpu,
            },
        };
        live.finish(outcome.exit_code(), outcome.short_description());
        Ok(RunReport {
            outcome,
            stats: vcpu.stats().clone(),
            unclaimed: vcpu.bus().unclaimed().clone(),
        })
    }
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
                module: kvm::host_kvm_module(),
            });
        }
    }
    Ok(())
}

/// An interrupt line for a device: an irqfd on `irq` when the VM has an irqchip.
fn connect_irq_line(vm_fd: &VmFd, irq: u32, irqchip: bool) -> Result<IrqLine, VmError> {
    if !irqchip {
        return Ok(IrqLine::disconnected(irq));
    }
    let event = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)?;
    vm_fd
        .register_irqfd(&event, irq)
        .map_err(ioctl("KVM_IRQFD"))?;
    Ok(IrqLine::connected(irq, event))
}

/// Coalesced I/O for the output-only ports: the UART's transmit register and the debug console.
///
/// KVM can queue writes to them on a ring shared with us instead of exiting for each byte
/// (KVM_REGISTER_COALESCED_MMIO with a port-I/O zone, KVM_CAP_COALESCED_PIO): `hello` then needs
/// 2 exits instead of 13. The zones are registered at the guest's first write to one of these
/// ports, not at creation: registering one leaves KVM with an SRCU grace period that a VM
/// destroyed within ~20 ms waits for (measured: 15 ms at teardown, docs/benchmarks.md), a cost
/// only guests that print should pay.
pub struct OutputCoalescing {
    vm_fd: Arc<VmFd>,
    ports: [u16; 2],
    registered: bool,
}

impl OutputCoalescing {
    /// Maps the coalesced ring of `vcpu_fd`; `None` when the host cannot coalesce port I/O.
    fn new(kvm: &Kvm, vm_fd: &Arc<VmFd>, vcpu_fd: &mut VcpuFd) -> Option<OutputCoalescing> {
        (kvm.check_extension(Cap::CoalescedPio) && vcpu_fd.map_coalesced_mmio_ring().is_ok()).then(
            || OutputCoalescing {
                vm_fd: Arc::clone(vm_fd),
                ports: [COM1_PORT, DEBUGCON_PORT],
                registered: false,
            },
        )
    }

    /// The guest wrote to `port` (an exit): from the first write to an output-only port on,
    /// later writes to them go to the ring.
    pub fn note_write(&mut self, port: u16) {
        if self.registered || !self.ports.contains(&port) {
            return;
        }
        self.registered = true;
        for port in self.ports {
            // If KVM refuses a zone, writes to that port simply keep exiting.
            let _ = self
                .vm_fd
                .register_coalesced_mmio(IoEventAddress::Pio(u64::from(port)), 1);
        }
    }

    /// Whether the ring can hold entries (and must be drained).
    pub fn active(&self) -> bool {
        self.registered
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs a do-nothing handler for the kick signal: its only job is to make KVM_RUN return
/// EINTR (the default action would kill the process).
fn install_kick_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
        register_signal_handler(kick_signal(), on_kick)
            .expect("registering a real-time signal handler cannot fail");
    });
}
