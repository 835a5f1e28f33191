//! The vCPU set of one VM: a thread per vCPU, and the controls to pause, resume and stop them
//! all and read every CPU's registers (what `--timeout`, Ctrl-A x, the idle check and a
//! debugger need).
//!
//! A vCPU thread looks at the shared [`VcpuControl`] between two `KVM_RUN`s. To reach a thread
//! that is inside `KVM_RUN` (running guest code, or waiting in the kernel: `hlt`, an AP waiting
//! for its INIT/SIPI), the set sends it a signal; KVM_RUN then returns EINTR (docs/kvm-api.md,
//! "Stopping"). A paused vCPU leaves its registers and its MP state with the control and waits.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_UNINITIALIZED};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::snapshot::CpuSnapshot;
use super::vcpu::{Vcpu, VcpuEnd};
use crate::arch::x86::modes::RFLAGS_IF;

/// What the vCPU threads are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Run,
    Pause,
    Stop,
}

/// A paused vCPU, as it left itself.
#[derive(Clone)]
pub struct PausedCpu {
    pub snapshot: CpuSnapshot,
    /// KVM_GET_MP_STATE (KVM_MP_STATE_*), `u32::MAX` if KVM would not say.
    pub mp_state: u32,
}

impl PausedCpu {
    /// Can this CPU never run again by itself? Halted with interrupts off (nothing but an NMI
    /// could wake it, and mini-kvm sends none), or an AP that nobody started.
    pub fn is_idle_for_good(&self) -> bool {
        match self.mp_state {
            KVM_MP_STATE_HALTED => self.snapshot.regs.rflags & RFLAGS_IF == 0,
            KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => true,
            _ => false,
        }
    }
}

/// Shared between the vCPU threads and the set that drives them.
pub struct VcpuControl {
    request: AtomicU8,
    /// Each paused vCPU's state, by index.
    parked: Mutex<Vec<Option<PausedCpu>>>,
    changed: Condvar,
}

impl VcpuControl {
    fn new(count: usize) -> VcpuControl {
        VcpuControl {
            request: AtomicU8::new(ControlRequest::Run as u8),
            parked: Mutex::new(vec![None; count]),
            changed: Condvar::new(),
        }
    }

    /// A shared control for `count` vCPUs, for `Vcpu::new`.
    pub fn shared(count: usize) -> Arc<VcpuControl> {
        Arc::new(VcpuControl::new(count))
    }

    /// What the vCPUs are asked to do now (one atomic load: the run loop asks at every exit).
    pub fn request(&self) -> ControlRequest {
        match self.request.load(Ordering::Acquire) {
            0 => ControlRequest::Run,
            1 => ControlRequest::Pause,
            _ => ControlRequest::Stop,
        }
    }

    fn set(&self, request: ControlRequest) {
        self.request.store(request as u8, Ordering::Release);
        // Wake the parked threads so they see it.
        let _parked = self.lock();
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<PausedCpu>>> {
        self.parked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by vCPU `index` when it sees a pause request: leaves its state and waits until the
    /// request changes.
    pub fn park(&self, index: usize, state: PausedCpu) {
        let mut parked = self.lock();
        parked[index] = Some(state);
        self.changed.notify_all();
        while self.request() == ControlRequest::Pause {
            parked = self
                .changed
                .wait(parked)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        parked[index] = None;
    }
}

type VcpuThread = JoinHandle<(VcpuEnd, Vcpu)>;

/// The vCPUs after their threads ended.
pub struct Joined {
    /// Each vCPU's end, and the vCPU, in CPU order.
    pub ends: Vec<(VcpuEnd, Vcpu)>,
    /// CPU indices in the order their threads ended: the first to end the guest decides how it
    /// ended.
    pub end_order: Vec<usize>,
}

/// Sends a vCPU's index and writes the end eventfd when dropped: at the end of its thread,
/// whether it returned or panicked.
struct AnnounceEnd {
    index: usize,
    ended_tx: mpsc::Sender<usize>,
    end_event: Arc<EventFd>,
}

impl Drop for AnnounceEnd {
    fn drop(&mut self) {
        let _ = self.ended_tx.send(self.index);
        let _ = self.end_event.write(1);
    }
}

/// The running vCPUs of one VM.
pub struct VcpuSet {
    threads: Vec<VcpuThread>,
    control: Arc<VcpuControl>,
    /// The index of each vCPU whose thread has ended, in the order they ended.
    ended: mpsc::Receiver<usize>,
    /// Written by each thread as it ends: the event loop waits on it.
    ended_event: Arc<EventFd>,
    end_order: Vec<usize>,
}

impl VcpuSet {
    /// Starts a thread per vCPU, named `vcpu-NAME` (with the CPU number when there are several).
    pub fn start(
        vcpus: Vec<Vcpu>,
        control: Arc<VcpuControl>,
        name: &str,
    ) -> Result<VcpuSet, std::io::Error> {
        install_kick_handler();
        let several = vcpus.len() > 1;
        let (ended_tx, ended) = mpsc::channel();
        let ended_event = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let mut threads = Vec::with_capacity(vcpus.len());
        for mut vcpu in vcpus {
            let index = vcpu.index();
            let ended_tx = ended_tx.clone();
            let end_event = Arc::clone(&ended_event);
            let thread_name = if several {
                format!("vcpu{index}-{name}")
            } else {
                format!("vcpu-{name}")
            };
            let spawned = thread::Builder::new().name(thread_name).spawn(move || {
                // Tells the event loop when this thread ends, even by a panic (a bug), so that
                // the other vCPUs are stopped rather than left running.
                let _announce = AnnounceEnd {
                    index,
                    ended_tx,
                    end_event,
                };
                let end = vcpu.run();
                (end, vcpu)
            });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    // Stop what already runs before reporting.
                    let set = VcpuSet {
                        threads,
                        control,
                        ended,
                        ended_event,
                        end_order: Vec::new(),
                    };
                    set.stop();
                    let _ = set.join();
                    return Err(error);
                }
            }
        }
        Ok(VcpuSet {
            threads,
            control,
            ended,
            ended_event,
            end_order: Vec::new(),
        })
    }

    /// The eventfd that becomes readable when a vCPU thread ends.
    pub fn end_fd(&self) -> RawFd {
        self.ended_event.as_raw_fd()
    }

    /// Notes the vCPU threads that have ended since the last call; true when one has.
    pub fn take_ends(&mut self) -> bool {
        let _ = self.ended_event.read();
        let before = self.end_order.len();
        while let Ok(index) = self.ended.try_recv() {
            self.end_order.push(index);
        }
        self.end_order.len() > before
    }

    /// Pauses every vCPU and returns their states, in CPU order. `None` when some vCPU did not
    /// park within `patience` (it is busy in the VMM, e.g. waiting for input in GETCHAR, or it
    /// has ended): the others are resumed.
    pub fn pause(&self, patience: Duration) -> Option<Vec<PausedCpu>> {
        self.control.set(ControlRequest::Pause);
        let started = Instant::now();
        loop {
            {
                let parked = self.control.lock();
                if parked.iter().all(Option::is_some) {
                    return Some(parked.iter().flatten().cloned().collect());
                }
                if started.elapsed() >= patience || self.threads.iter().any(|t| t.is_finished()) {
                    drop(parked);
                    self.resume();
                    return None;
                }
                for (thread, state) in self.threads.iter().zip(parked.iter()) {
                    if state.is_none() {
                        let _ = thread.kill(kick_signal());
                    }
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn resume(&self) {
        self.control.set(ControlRequest::Run);
    }

    /// Asks every vCPU to stop, and kicks until every thread has ended.
    pub fn stop(&self) {
        self.control.set(ControlRequest::Stop);
        // A signal may land just before a thread enters KVM_RUN, where it would be missed: kick
        // until each thread has noticed.
        while let Some(running) = self.threads.iter().find(|t| !t.is_finished()) {
            let _ = running.kill(kick_signal());
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kicks every vCPU still running out of KVM_RUN once (it re-enters unless asked to stop).
    pub fn kick_all(&self) {
        for thread in self.threads.iter().filter(|t| !t.is_finished()) {
            let _ = thread.kill(kick_signal());
        }
    }

    /// Waits for every thread; `None` if one panicked.
    pub fn join(mut self) -> Option<Joined> {
        let mut results = Vec::with_capacity(self.threads.len());
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(result) => results.push(result),
                Err(_) => panicked = true,
            }
        }
        while let Ok(index) = self.ended.try_recv() {
            self.end_order.push(index);
        }
        (!panicked).then_some(Joined {
            ends: results,
            end_order: self.end_order,
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
