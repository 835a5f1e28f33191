//! One guest = one KVM VM: its memory, its devices, its vCPUs.
//!
//! `Vm::create` (builder.rs) builds the machine. [`Vm::run`] starts a thread per vCPU
//! (vcpus.rs) and runs the VM's event loop (event_loop.rs, `Watcher`) on its own thread: it
//! feeds the guest's input as fast as the guest takes it, flushes the guest's output, enforces
//! `--timeout`, and notices a guest that can never run again. When the guest is over, `run`
//! decides how it ended.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::debug::{DebugControl, DebugStub, DebugTarget};
use super::device_manager::{DeviceError, DeviceInfo};
use super::event_loop::{EventHandler, StoppedBy, Watcher};
use super::kvm::KvmError;
use super::memory::MemoryError;
use super::outcome::{AllCpus, GuestOutcome};
use super::seccomp::{self, Role, SeccompError};
use super::stats::{ExitStats, LiveCounters};
use super::vcpu::{Vcpu, VcpuEnd};
use super::vcpu_control::VcpuControl;
use super::vcpus::{Joined, VcpuSet};
use crate::arch::ArchError;
use crate::arch::x86::acpi::AcpiError;
use crate::arch::x86::layout;
use crate::config::ConfigError;
use crate::console::{GuestInput, GuestOutput};
use crate::devices::GuestStop;
use crate::devices::display::Display;
use crate::loader::LoaderError;

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
    #[error(transparent)]
    Snapshot(#[from] super::snapshot::SnapshotError),
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

/// Turns a failed KVM call into a [`VmError`] that names it.
pub(super) fn ioctl(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { call, source }
}

/// How a run went.
pub struct RunReport {
    pub outcome: GuestOutcome,
    /// With a display: its screen, as the guest left it.
    pub display: Option<Display>,
    /// The counts of all the guest's vCPUs together.
    pub stats: ExitStats,
}

/// A built VM (builder.rs makes it), ready to run.
pub struct Vm {
    pub(super) name: String,
    /// Kept open for the VM's lifetime; closing it (on drop) destroys the VM.
    pub(super) _vm_fd: Arc<VmFd>,
    pub(super) vcpus: Vec<Vcpu>,
    pub(super) control: Arc<VcpuControl>,
    pub(super) devices: Vec<DeviceInfo>,
    /// Device work for the event loop (ioeventfds and the like).
    pub(super) event_handlers: Vec<Box<dyn EventHandler>>,
    pub(super) output: GuestOutput,
    pub(super) input: GuestInput,
    pub(super) live: Arc<LiveCounters>,
    /// Filter each thread once the guest runs (src/vmm/seccomp.rs).
    pub(super) seccomp: bool,
    /// A Linux guest's memory, where its kernel leaves the warm-reset flag when it panics.
    pub(super) linux_memory: Option<GuestMemoryMmap>,
    /// `--gdb`: the stub and the controls it drives the vCPUs with.
    pub(super) debugger: Option<(Box<dyn DebugStub>, DebugTarget)>,
    /// The display adapter's screen, for the views.
    pub(super) display: Option<Display>,
}

impl Vm {
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

/// Tells the debugger the guest has ended, and waits for its thread: gdb hears the exit status
/// if it was waiting for the guest, and sees its connection close if it sat at its prompt (the
/// guest timed out while stopped).
fn end_debugging(control: &DebugControl, thread: thread::JoinHandle<()>, status: u8) {
    control.guest_ended(status);
    let _ = thread.join();
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
            Some(VcpuEnd::Snapshotted(Ok(taken))) => GuestOutcome::Snapshotted(taken),
            Some(VcpuEnd::Snapshotted(Err(error))) => GuestOutcome::SnapshotFailed(error),
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
