//! The vCPU set of one VM: a thread per vCPU, and the controls to pause, resume and stop them
//! all and read every CPU's registers (what `--timeout`, Ctrl-A x, the idle check and a
//! debugger need).
//!
//! A vCPU thread looks at the shared [`VcpuControl`] (vcpu_control.rs) between two `KVM_RUN`s. To reach a thread
//! that is inside `KVM_RUN` (running guest code, or waiting in the kernel: `hlt`, an AP waiting
//! for its INIT/SIPI), the set sends it a signal; KVM_RUN then returns EINTR (docs/kvm-api.md,
//! "Stopping"). A paused vCPU leaves its registers and its MP state with the control and waits.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::seccomp::{self, Role};
use super::vcpu::{Vcpu, VcpuEnd};
use super::vcpu_control::{ControlRequest, PausedCpu, VcpuControl};

/// Where a vCPU runs.
enum CpuThread {
    /// vCPU 0 runs on the thread that called `Vm::run`, the thread that created it. KVM loads
    /// a vCPU's state on the host CPU of the thread that uses it: a vCPU created on one thread
    /// and run on another pays for the move, which measured (kvm_pvm) as much as a third of a
    /// small VM's whole life.
    Caller {
        thread: libc::pthread_t,
        finished: Arc<AtomicBool>,
    },
    Spawned(JoinHandle<(VcpuEnd, Vcpu)>),
}

impl CpuThread {
    fn is_finished(&self) -> bool {
        match self {
            CpuThread::Caller { finished, .. } => finished.load(Ordering::Acquire),
            CpuThread::Spawned(handle) => handle.is_finished(),
        }
    }

    /// Sends the kick signal: KVM_RUN returns EINTR.
    fn kick(&self) {
        match self {
            // SAFETY: the calling thread outlives the set (Vm::run joins the set's users before
            // it returns), and the signal's handler does nothing.
            CpuThread::Caller { thread, .. } => unsafe {
                libc::pthread_kill(*thread, kick_signal());
            },
            CpuThread::Spawned(handle) => {
                let _ = handle.kill(kick_signal());
            }
        }
    }
}

/// vCPU 0, to be run by the thread that started the set (see [`CpuThread::Caller`]).
pub struct CallerCpu {
    vcpu: Vcpu,
    announce: AnnounceEnd,
    /// Put the caller's thread under the vCPU filter before it runs the vCPU.
    seccomp: bool,
}

impl CallerCpu {
    /// Runs vCPU 0 here until it ends or the set stops it.
    /// With seccomp, the thread keeps the vCPU filter afterwards: the rest of its work (ending
    /// the VM, the report) fits in it.
    pub fn run(mut self) -> (VcpuEnd, Vcpu) {
        if self.seccomp {
            seccomp::install_or_exit(Role::Vcpu);
        }
        let end = self.vcpu.run();
        drop(self.announce);
        (end, self.vcpu)
    }
}

/// The vCPUs after their threads ended.
pub struct Joined {
    /// Each vCPU's end, and the vCPU, in CPU order.
    pub ends: Vec<(VcpuEnd, Vcpu)>,
    /// CPU indices in the order their threads ended: the first to end the guest decides how it
    /// ended.
    pub end_order: Vec<usize>,
}

/// Sends a vCPU's index and writes the end eventfd when dropped: at the end of its run,
/// whether it returned or panicked.
struct AnnounceEnd {
    index: usize,
    ended_tx: mpsc::Sender<usize>,
    end_event: Arc<EventFd>,
    /// For vCPU 0 on the calling thread: its "thread has finished".
    finished: Option<Arc<AtomicBool>>,
}

impl Drop for AnnounceEnd {
    fn drop(&mut self) {
        if let Some(finished) = &self.finished {
            finished.store(true, Ordering::Release);
        }
        let _ = self.ended_tx.send(self.index);
        let _ = self.end_event.write(1);
    }
}

/// The running vCPUs of one VM.
pub struct VcpuSet {
    /// In CPU order: vCPU 0 on the caller's thread, the others on threads of their own.
    threads: Vec<CpuThread>,
    control: Arc<VcpuControl>,
    /// The index of each vCPU whose thread has ended, in the order they ended.
    ended: mpsc::Receiver<usize>,
    /// Written by each thread as it ends: the event loop waits on it.
    ended_event: Arc<EventFd>,
    end_order: Vec<usize>,
}

impl VcpuSet {
    /// Starts a thread per vCPU but the first, named `vcpu<N>-NAME`; returns vCPU 0 for the
    /// caller to run on its own thread ([`CallerCpu::run`]).
    pub fn start(
        vcpus: Vec<Vcpu>,
        control: Arc<VcpuControl>,
        name: &str,
        seccomp: bool,
    ) -> Result<(VcpuSet, CallerCpu), std::io::Error> {
        install_kick_handler();
        let (ended_tx, ended) = mpsc::channel();
        let ended_event = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let announce = |index: usize, finished: Option<Arc<AtomicBool>>| AnnounceEnd {
            index,
            ended_tx: ended_tx.clone(),
            end_event: Arc::clone(&ended_event),
            finished,
        };
        let mut vcpus = vcpus.into_iter();
        let first = vcpus.next().expect("a VM has at least one vCPU");
        let finished = Arc::new(AtomicBool::new(false));
        let caller = CallerCpu {
            announce: announce(first.index(), Some(Arc::clone(&finished))),
            vcpu: first,
            seccomp,
        };
        let mut set = VcpuSet {
            threads: vec![CpuThread::Caller {
                // SAFETY: pthread_self has no preconditions.
                thread: unsafe { libc::pthread_self() },
                finished,
            }],
            control,
            ended,
            ended_event: Arc::clone(&ended_event),
            end_order: Vec::new(),
        };
        for mut vcpu in vcpus {
            let index = vcpu.index();
            // Tells the event loop when this thread ends, even by a panic (a bug), so that the
            // other vCPUs are stopped rather than left running.
            let announce_end = announce(index, None);
            let spawned = thread::Builder::new()
                .name(format!("vcpu{index}-{name}"))
                .spawn(move || {
                    let _announce = announce_end;
                    if seccomp {
                        seccomp::install_or_exit(Role::Vcpu);
                    }
                    let end = vcpu.run();
                    (end, vcpu)
                });
            match spawned {
                Ok(thread) => set.threads.push(CpuThread::Spawned(thread)),
                Err(error) => {
                    // Stop what already runs before reporting; vCPU 0 never ran.
                    drop(caller);
                    set.stop();
                    let _ = set.join_spawned();
                    return Err(error);
                }
            }
        }
        Ok((set, caller))
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
                        thread.kick();
                    }
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn resume(&self) {
        self.control.set(ControlRequest::Run);
    }

    /// Asks every vCPU to stop at its next look at the control, without waiting for it.
    pub fn request_stop(&self) {
        self.control.set(ControlRequest::Stop);
    }

    /// Asks every vCPU to stop, and kicks until every thread has ended.
    pub fn stop(&self) {
        self.control.set(ControlRequest::Stop);
        // A signal may land just before a thread enters KVM_RUN, where it would be missed: kick
        // until each thread has noticed.
        while let Some(running) = self.threads.iter().find(|t| !t.is_finished()) {
            running.kick();
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kicks every vCPU still running out of KVM_RUN once (it re-enters unless asked to stop).
    pub fn kick_all(&self) {
        for thread in self.threads.iter().filter(|t| !t.is_finished()) {
            thread.kick();
        }
    }

    /// Waits for every thread, given how vCPU 0 ended on the caller's thread; `None` if a
    /// thread panicked.
    pub fn join(mut self, first: (VcpuEnd, Vcpu)) -> Option<Joined> {
        let others = self.join_spawned()?;
        let mut ends = Vec::with_capacity(1 + others.len());
        ends.push(first);
        ends.extend(others);
        while let Ok(index) = self.ended.try_recv() {
            self.end_order.push(index);
        }
        Some(Joined {
            ends,
            end_order: self.end_order,
        })
    }

    /// Waits for the spawned threads; `None` if one panicked.
    fn join_spawned(&mut self) -> Option<Vec<(VcpuEnd, Vcpu)>> {
        let mut results = Vec::with_capacity(self.threads.len());
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            if let CpuThread::Spawned(handle) = thread {
                match handle.join() {
                    Ok(result) => results.push(result),
                    Err(_) => panicked = true,
                }
            }
        }
        (!panicked).then_some(results)
    }
}

/// Kicks one vCPU thread out of KVM_RUN (what the debugger uses: vmm/debug.rs).
pub fn kick_thread(thread: libc::pthread_t) {
    // SAFETY: the debugger forgets a thread before it ends (DebugControl::thread_finished), and
    // the signal's handler does nothing.
    unsafe {
        libc::pthread_kill(thread, kick_signal());
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
