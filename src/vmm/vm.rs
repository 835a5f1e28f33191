//! One guest = one KVM VM: its memory, its devices, its vCPU thread.
//!
//! [`Vm::create`] makes the KVM calls in the order docs/kvm-api.md walks through them;
//! [`Vm::run`] runs the vCPU on its own thread and enforces `--timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VmFd};
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::exit::{ExitStats, GuestOutcome, LiveCounters};
use super::kvm::KvmError;
use super::memory::{MemoryError, REAL_MODE_SEGMENT, create_guest_memory};
use super::vcpu::{Vcpu, VcpuEnd};
use crate::arch::modes::setup_real_mode;
use crate::console::{GuestInput, GuestIo, GuestOutput};
use crate::devices::bus::UnclaimedPorts;
use crate::devices::debugcon::{DEBUGCON_PORT, DebugConsole};
use crate::devices::hypercall::{HYPERCALL_PORT, HypercallDevice};
use crate::devices::i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT};
use crate::devices::serial::{COM1_LAST_PORT, COM1_PORT, Uart};
use crate::devices::{GuestStop, PortBus};
use crate::loader::{self, GuestMode, LoaderError};

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("{call} failed: {source}")]
    Ioctl {
        call: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("the host KVM lacks {0}, which mini-kvm needs")]
    MissingCapability(&'static str),
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
    pub mode: GuestMode,
    pub memory_size: u64,
    /// `--verbose`: trace every exit and hypercall on stderr.
    pub verbose: bool,
    /// Put before each trace line (the guest's label when several guests run), or "".
    pub trace_label: &'a str,
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
    _vm_fd: VmFd,
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
        let vm_fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;

        // 4. Guest RAM: map it in our process, copy the image in, give it to KVM as slot 0.
        let memory = create_guest_memory(setup.memory_size)?;
        match setup.mode {
            GuestMode::Real => {
                loader::flat::load_real_mode_image(&memory, setup.name, setup.image)?
            }
        }
        let host_address = memory
            .get_host_address(GuestAddress(0))
            .expect("guest RAM starts at 0") as u64;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: setup.memory_size,
            userspace_addr: host_address,
        };
        // SAFETY: `memory` maps `memory_size` bytes at `host_address` and lives as long as the VM
        // (the vCPU holds a clone of it), so KVM never sees unmapped memory.
        unsafe { vm_fd.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;

        // 5-6. KVM_CREATE_VCPU, then its registers: the CPU mode the guest starts in.
        let vcpu_fd = vm_fd.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        let mut sregs = vcpu_fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        let mut regs = vcpu_fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
        match setup.mode {
            GuestMode::Real => setup_real_mode(&mut sregs, &mut regs, REAL_MODE_SEGMENT),
        }
        vcpu_fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        vcpu_fd.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;

        // 7. Devices on the port-I/O bus.
        let mut bus = PortBus::new();
        bus.register(
            &[(COM1_PORT, COM1_LAST_PORT)],
            Box::new(Uart::new(io.output.clone(), io.input.clone())),
        );
        bus.register(
            &[(DEBUGCON_PORT, DEBUGCON_PORT)],
            Box::new(DebugConsole::new(io.output.clone())),
        );
        // 0x61, between the i8042's two ports, is the PC speaker gate: left unclaimed.
        bus.register(
            &[
                (I8042_DATA_PORT, I8042_DATA_PORT),
                (I8042_COMMAND_PORT, I8042_COMMAND_PORT),
            ],
            Box::new(I8042::new()),
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

        let live = Arc::new(LiveCounters::default());
        let trace_label = setup.trace_label.to_string();
        Ok(Vm {
            name: setup.name.to_string(),
            _vm_fd: vm_fd,
            vcpu: Vcpu::new(
                vcpu_fd,
                memory,
                bus,
                setup.verbose,
                trace_label,
                Arc::clone(&live),
            ),
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
        loop {
            if cancel.load(Ordering::Acquire) {
                cancelled = true;
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
                Err(mpsc::RecvTimeoutError::Timeout) => output.flush(),
            }
        }
        if timed_out || cancelled {
            stop.store(true, Ordering::Release);
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

        let outcome = match end {
            VcpuEnd::Stopped(GuestStop::Exit(status)) => GuestOutcome::Exited(status),
            VcpuEnd::Stopped(GuestStop::Reboot) => GuestOutcome::Rebooted,
            VcpuEnd::Halted => GuestOutcome::Halted,
            VcpuEnd::Faulted(fault, cpu) => GuestOutcome::Faulted { fault, cpu },
            VcpuEnd::Interrupted(cpu) if cancelled => GuestOutcome::Cancelled { cpu },
            VcpuEnd::Interrupted(cpu) => GuestOutcome::TimedOut {
                after: started.elapsed(),
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
