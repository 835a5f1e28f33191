//! A debugger's hold on one VM: stop every vCPU, work on a stopped vCPU (its registers, memory
//! through its page tables), resume them running or stepping, and learn why they stopped.
//!
//! The GDB stub (src/gdb/) drives a [`DebugControl`] from a thread of its own; each vCPU's run
//! loop (vcpu.rs) looks at it between two `KVM_RUN`s, one atomic load per exit. The protocol
//! is gdb's "all-stop" mode:
//!
//! - the VM starts stopped: every vCPU parks before its first instruction;
//! - `resume` gives each vCPU an action (run, step, or stay parked) and lets them go;
//! - the first vCPU to stop for a reason (a step done, a breakpoint, a watchpoint, Ctrl-C)
//!   records that reason and kicks the others out of `KVM_RUN`; once every vCPU is parked, the
//!   stub reports the stop to gdb;
//! - while parked, a vCPU runs the jobs the stub hands it: every register and translation ioctl
//!   is made on the vCPU's own thread, which owns the vCPU.
//!
//! Breakpoints reach KVM through `KVM_SET_GUEST_DEBUG`, which a vCPU applies to itself as it
//! leaves the park. Software breakpoints are `int3` bytes written into the guest where KVM
//! intercepts `#BP` (hardware KVM). Where it does not ([`probe_debug_support`] tries: kvm_pvm,
//! nested SVM under QEMU's TCG), the vCPU single-steps and compares each new instruction pointer
//! with the breakpoints instead: slower, but the guest's memory is never touched. Hardware breakpoints and watchpoints use the
//! debug registers, where the host has them (`KVM_CAP_GUEST_DEBUG_HW_BPS`; kvm_pvm has none).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_GUESTDBG_USE_SW_BP, kvm_fpu, kvm_guest_debug, kvm_regs, kvm_sregs,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::memory::{create_guest_memory, register_memory_slots};
use crate::arch::CpuMode;
use crate::arch::x86::layout::{MIN_MEMORY_SIZE, REAL_MODE_LOAD_ADDRESS, REAL_MODE_SEGMENT};
use crate::arch::x86::modes::{CR0_PG, setup_real_mode};

/// The `int3` instruction: what a software breakpoint writes over the first byte of an
/// instruction.
const INT3: u8 = 0xcc;
/// x86 has four debug address registers, DR0 to DR3.
pub const DEBUG_REGISTERS: usize = 4;
/// Debug exceptions: #DB (single-step, debug registers) and #BP (`int3`).
const DB_VECTOR: u32 = 1;
pub const BP_VECTOR: u32 = 3;
/// DR6.BS: the #DB came from single-stepping (RFLAGS.TF).
const DR6_SINGLE_STEP: u64 = 1 << 14;

/// What a vCPU does when the debugger resumes the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    Continue,
    /// Execute one instruction, then stop.
    Step,
}

/// What a hardware breakpoint watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwKind {
    /// Executing the instruction at the address (a hardware breakpoint).
    Execute,
    Write,
    /// Reads and writes: x86 debug registers cannot watch reads alone.
    ReadWrite,
}

/// One debug register's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwPoint {
    pub address: u64,
    pub kind: HwKind,
    /// 1, 2, 4 or 8 bytes (1 for an execution breakpoint).
    pub len: u64,
}

/// Why the VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The debugger asked (at the start, or Ctrl-C).
    Interrupted,
    /// A step the debugger asked for is done.
    StepDone,
    SwBreakpoint,
    HwBreakpoint,
    /// A watchpoint: which one fired.
    Watch(HwPoint),
    /// A debug exception the debugger did not ask for (the guest's own `int3` or trap flag).
    Trap,
}

/// The first stop since the last resume: on which vCPU, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopEvent {
    pub cpu: usize,
    pub reason: StopReason,
}

/// What the debugger learns while it waits for a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugEvent {
    Stopped(StopEvent),
    /// The guest has ended, with this exit status.
    Ended(u8),
}

/// What a parked vCPU does next.
pub enum Unpark {
    /// Run the guest with these guest-debug settings.
    Run(Resume),
    /// The vCPU set stopped the VM (`--timeout`, the guest ended on another CPU).
    Stop,
    /// The debugger killed the guest.
    Kill,
}

/// Work for a parked vCPU, run on its thread.
pub type Job = Box<dyn FnOnce(&mut StoppedCpu<'_>) + Send>;

/// A software breakpoint written into guest memory (hardware KVM).
#[derive(Debug, Clone, Copy)]
struct PatchedBreakpoint {
    linear: u64,
    physical: u64,
    original: u8,
}

struct DebugState {
    /// False after gdb detached: the vCPUs run on without debugging.
    attached: bool,
    /// Each vCPU's action at the next resume; `None` stays parked.
    actions: Vec<Option<Resume>>,
    parked: Vec<bool>,
    /// vCPUs whose threads have ended.
    finished: Vec<bool>,
    jobs: Vec<Option<Job>>,
    stop: Option<StopEvent>,
    /// Software breakpoints, by linear address.
    breakpoints: Vec<u64>,
    patched: Vec<PatchedBreakpoint>,
    hw_points: Vec<HwPoint>,
    /// Each vCPU thread, to kick it out of KVM_RUN.
    threads: Vec<Option<libc::pthread_t>>,
    ended: Option<u8>,
    killed: bool,
}

/// A debugger's controls over the vCPUs of one VM (see the module's comment).
pub struct DebugControl {
    /// "Every vCPU: park at your next look." Set at the start, by a stop and by Ctrl-C.
    stop_requested: AtomicBool,
    state: Mutex<DebugState>,
    changed: Condvar,
    /// What the host's KVM does for a debugger (probed).
    host: ProbedDebugSupport,
    /// KVM_GUESTDBG_BLOCKIRQ: a step the debugger asks for does not wander into an interrupt
    /// handler.
    block_irq_when_stepping: bool,
    kick: fn(libc::pthread_t),
}

/// What the host KVM can do for a debugger.
#[derive(Debug, Clone, Copy)]
pub struct HostDebugSupport {
    pub probed: ProbedDebugSupport,
    /// KVM_CAP_SET_GUEST_DEBUG2 lists KVM_GUESTDBG_BLOCKIRQ.
    pub block_irq: bool,
}

/// Where a debug register's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegisterUse {
    /// gdb's `hbreak`, `watch`, `rwatch`, `awatch`.
    Asked,
    /// A software breakpoint (gdb's `break`) put in a free debug register, where KVM does not
    /// stop at `int3`.
    Breakpoint,
}

impl DebugControl {
    /// The control of a VM of `cpus` vCPUs, which start stopped. `kick` sends a thread the
    /// signal that makes its KVM_RUN return.
    pub fn new(cpus: usize, host: HostDebugSupport, kick: fn(libc::pthread_t)) -> DebugControl {
        DebugControl {
            stop_requested: AtomicBool::new(true),
            state: Mutex::new(DebugState {
                attached: true,
                actions: vec![None; cpus],
                parked: vec![false; cpus],
                finished: vec![false; cpus],
                jobs: (0..cpus).map(|_| None).collect(),
                stop: Some(StopEvent {
                    cpu: 0,
                    reason: StopReason::Interrupted,
                }),
                breakpoints: Vec::new(),
                patched: Vec::new(),
                hw_points: Vec::new(),
                threads: vec![None; cpus],
                ended: None,
                killed: false,
            }),
            changed: Condvar::new(),
            host: host.probed,
            block_irq_when_stepping: host.block_irq,
            kick,
        }
    }

    fn lock(&self) -> MutexGuard<'_, DebugState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn cpus(&self) -> usize {
        self.lock().parked.len()
    }

    /// How this host finds breakpoints and watchpoints, for the user (docs/gdb.md).
    pub fn describe_support(&self) -> String {
        let breakpoints = if self.host.int3 {
            "int3"
        } else if self.host.execution_breakpoints {
            "debug registers, then single-stepping"
        } else {
            "single-stepping"
        };
        let watchpoints = if self.host.write_watchpoints {
            "debug registers"
        } else {
            "none"
        };
        format!("breakpoints: {breakpoints}; watchpoints: {watchpoints}")
    }

    /// Can gdb have hardware breakpoints (`hbreak`)?
    pub fn offers_hw_breakpoints(&self) -> bool {
        self.host.execution_breakpoints
    }

    /// Can gdb have watchpoints?
    pub fn offers_watchpoints(&self) -> bool {
        self.host.write_watchpoints
    }

    /// The debug registers' jobs: gdb's hardware breakpoints and watchpoints first, then, where
    /// KVM does not stop at `int3`, as many software breakpoints as fit. The same state always
    /// gives the same list (it changes only while the VM is stopped), so DR6's bit N at a debug
    /// exit means entry N.
    fn debug_registers(&self, state: &DebugState) -> Vec<(HwPoint, RegisterUse)> {
        let mut registers: Vec<_> = state
            .hw_points
            .iter()
            .map(|point| (*point, RegisterUse::Asked))
            .collect();
        if !self.host.int3 && self.host.execution_breakpoints {
            for &address in &state.breakpoints {
                if registers.len() == DEBUG_REGISTERS {
                    break;
                }
                registers.push((execution_point(address), RegisterUse::Breakpoint));
            }
        }
        registers
    }

    /// Are there software breakpoints neither an `int3` nor a debug register covers, which
    /// single-stepping must find?
    fn breakpoints_by_stepping(&self, state: &DebugState) -> bool {
        let in_registers = self
            .debug_registers(state)
            .iter()
            .filter(|(_, used)| *used == RegisterUse::Breakpoint)
            .count();
        !self.host.int3 && state.breakpoints.len() > in_registers
    }

    // ---- The vCPU's side ----

    /// Called by each vCPU thread before it first runs: where to send the kick.
    pub fn register_thread(&self, cpu: usize) {
        // SAFETY: pthread_self has no preconditions.
        self.lock().threads[cpu] = Some(unsafe { libc::pthread_self() });
    }

    /// Called when a vCPU thread ends, whatever the reason.
    pub fn thread_finished(&self, cpu: usize) {
        let mut state = self.lock();
        state.finished[cpu] = true;
        state.parked[cpu] = false;
        state.threads[cpu] = None;
        self.changed.notify_all();
    }

    /// Must the vCPUs park? One atomic load: the run loop asks at every exit.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Parks vCPU `cpu` until the debugger resumes it, running the debugger's jobs on it
    /// meanwhile. `stop_wanted` tells whether the vCPU set is stopping the VM.
    pub fn park(
        &self,
        cpu: usize,
        access: &mut StoppedCpu<'_>,
        stop_wanted: &dyn Fn() -> bool,
    ) -> Unpark {
        let mut state = self.lock();
        state.parked[cpu] = true;
        self.changed.notify_all();
        loop {
            if let Some(job) = state.jobs[cpu].take() {
                drop(state);
                job(access);
                state = self.lock();
                continue;
            }
            if state.killed {
                state.parked[cpu] = false;
                return Unpark::Kill;
            }
            if stop_wanted() {
                state.parked[cpu] = false;
                return Unpark::Stop;
            }
            if !self.stop_requested() {
                let action = if state.attached {
                    state.actions[cpu]
                } else {
                    Some(Resume::Continue)
                };
                if let Some(action) = action {
                    state.parked[cpu] = false;
                    return Unpark::Run(action);
                }
            }
            // A timeout, to see the vCPU set's stop request (it signals another condvar).
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// The guest-debug settings vCPU `cpu` runs with under `action` (KVM_SET_GUEST_DEBUG).
    pub fn guest_debug(&self, action: Resume) -> kvm_guest_debug {
        let state = self.lock();
        let mut debug = kvm_guest_debug::default();
        if !state.attached {
            return debug;
        }
        let mut control = 0;
        match action {
            Resume::Step => {
                control |= KVM_GUESTDBG_SINGLESTEP;
                if self.block_irq_when_stepping {
                    control |= KVM_GUESTDBG_BLOCKIRQ;
                }
            }
            Resume::Continue if self.breakpoints_by_stepping(&state) => {
                control |= KVM_GUESTDBG_SINGLESTEP;
            }
            Resume::Continue => {}
        }
        if !state.patched.is_empty() {
            control |= KVM_GUESTDBG_USE_SW_BP;
        }
        let registers = self.debug_registers(&state);
        if !registers.is_empty() {
            control |= KVM_GUESTDBG_USE_HW_BP;
            let mut dr7 = 0u64;
            for (index, (point, _)) in registers.iter().enumerate() {
                debug.arch.debugreg[index] = point.address;
                dr7 |= dr7_bits(index, point);
            }
            debug.arch.debugreg[7] = dr7;
        }
        if control != 0 {
            debug.control = control | KVM_GUESTDBG_ENABLE;
        }
        debug
    }

    /// A debug exit (KVM_EXIT_DEBUG) of vCPU `cpu`, which was running under `action`, at the
    /// linear instruction pointer `pc`: the reason to stop, or `None` to go on (a step of
    /// breakpoint emulation that did not land on a breakpoint).
    pub fn debug_exit(
        &self,
        action: Resume,
        exception: u32,
        dr6: u64,
        pc: u64,
    ) -> Option<StopReason> {
        let state = self.lock();
        if !state.attached {
            // A last exit from the settings of before the detach: nobody is listening.
            return None;
        }
        if exception == BP_VECTOR {
            let ours = state.patched.iter().any(|b| b.linear == pc);
            return Some(if ours {
                StopReason::SwBreakpoint
            } else {
                StopReason::Trap
            });
        }
        if exception != DB_VECTOR {
            return Some(StopReason::Trap);
        }
        // A debug register matched: B0..B3 in DR6.
        let registers = self.debug_registers(&state);
        if let Some(index) = (0..registers.len()).find(|&i| dr6 & (1 << i) != 0) {
            return Some(match registers[index] {
                (_, RegisterUse::Breakpoint) => StopReason::SwBreakpoint,
                (point, _) if point.kind == HwKind::Execute => StopReason::HwBreakpoint,
                (point, _) => StopReason::Watch(point),
            });
        }
        if dr6 & DR6_SINGLE_STEP != 0 || dr6 == 0 {
            if action == Resume::Step {
                return Some(StopReason::StepDone);
            }
            if self.breakpoints_by_stepping(&state) {
                return state
                    .breakpoints
                    .contains(&pc)
                    .then_some(StopReason::SwBreakpoint);
            }
        }
        Some(StopReason::Trap)
    }

    /// Is there an `int3` of ours at this linear address?
    pub fn is_patched(&self, linear: u64) -> bool {
        self.lock().patched.iter().any(|b| b.linear == linear)
    }

    /// On a host that finishes an `in`/`out` or MMIO instruction before the exit (kvm_pvm), no
    /// single-step trap follows it: the vCPU reports the instruction done here instead, at the
    /// linear instruction pointer `pc` after it.
    pub fn instruction_completed(&self, action: Resume, pc: u64) -> Option<StopReason> {
        let state = self.lock();
        if !state.attached {
            return None;
        }
        match action {
            Resume::Step => Some(StopReason::StepDone),
            Resume::Continue
                if self.breakpoints_by_stepping(&state) && state.breakpoints.contains(&pc) =>
            {
                Some(StopReason::SwBreakpoint)
            }
            Resume::Continue => None,
        }
    }

    /// vCPU `cpu` stopped for `reason`: the first stop since the resume is the one gdb hears
    /// of; the other vCPUs are asked to park.
    pub fn report_stop(&self, cpu: usize, reason: StopReason) {
        let mut state = self.lock();
        if state.stop.is_none() {
            state.stop = Some(StopEvent { cpu, reason });
        }
        self.stop_requested.store(true, Ordering::Release);
        self.kick_others(&state, Some(cpu));
        self.changed.notify_all();
    }

    fn kick_others(&self, state: &DebugState, except: Option<usize>) {
        for (index, thread) in state.threads.iter().enumerate() {
            if Some(index) != except
                && !state.parked[index]
                && let Some(thread) = thread
            {
                (self.kick)(*thread);
            }
        }
    }

    // ---- The debugger's side ----

    /// Waits up to `patience` for the VM to stop (every live vCPU parked) or the guest to end.
    pub fn wait_event(&self, patience: Duration) -> Option<DebugEvent> {
        let deadline = Instant::now() + patience;
        let mut state = self.lock();
        loop {
            if let Some(status) = state.ended {
                return Some(DebugEvent::Ended(status));
            }
            if let Some(stop) = state.stop
                && state
                    .parked
                    .iter()
                    .zip(&state.finished)
                    .all(|(p, f)| *p || *f)
            {
                return Some(DebugEvent::Stopped(stop));
            }
            if self.stop_requested() {
                // A kick can land just before a thread enters KVM_RUN: kick again.
                self.kick_others(&state, None);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = (deadline - now).min(Duration::from_millis(10));
            state = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Ctrl-C in gdb: stop every vCPU.
    pub fn interrupt(&self) {
        let mut state = self.lock();
        if state.stop.is_none() {
            // Reported on the first vCPU still alive.
            let cpu = state.finished.iter().position(|f| !f).unwrap_or(0);
            state.stop = Some(StopEvent {
                cpu,
                reason: StopReason::Interrupted,
            });
        }
        self.stop_requested.store(true, Ordering::Release);
        self.kick_others(&state, None);
        self.changed.notify_all();
    }

    /// Lets the vCPUs run again, each with its action (`None`: stays parked).
    pub fn resume(&self, actions: Vec<Option<Resume>>) {
        let mut state = self.lock();
        state.actions = actions;
        state.stop = None;
        self.stop_requested.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    /// gdb detached: forget the breakpoints, and let every vCPU run on, undebugged.
    pub fn detach(&self) {
        let mut state = self.lock();
        state.attached = false;
        state.breakpoints.clear();
        state.hw_points.clear();
        state.stop = None;
        self.stop_requested.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    /// gdb killed the guest: the parked vCPUs end it.
    pub fn kill(&self) {
        let mut state = self.lock();
        state.killed = true;
        self.stop_requested.store(true, Ordering::Release);
        self.kick_others(&state, None);
        self.changed.notify_all();
    }

    /// Did gdb kill the guest?
    pub fn killed(&self) -> bool {
        self.lock().killed
    }

    /// The guest has ended with `status` (called by the VM once its vCPUs are done).
    pub fn guest_ended(&self, status: u8) {
        let mut state = self.lock();
        state.ended = Some(status);
        self.changed.notify_all();
    }

    /// Has the guest ended? The stub's reads give up then, whatever gdb is doing.
    pub fn is_over(&self) -> bool {
        self.lock().ended.is_some()
    }

    /// Runs `work` on parked vCPU `cpu` and returns its result; `None` if that vCPU is gone or
    /// not parked.
    pub fn on_cpu<R: Send + 'static>(
        &self,
        cpu: usize,
        work: impl FnOnce(&mut StoppedCpu<'_>) -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = mpsc::channel();
        {
            let mut state = self.lock();
            if cpu >= state.parked.len() || !state.parked[cpu] {
                return None;
            }
            state.jobs[cpu] = Some(Box::new(move |access: &mut StoppedCpu<'_>| {
                let _ = done.send(work(access));
            }));
            self.changed.notify_all();
        }
        loop {
            match result.recv_timeout(Duration::from_millis(50)) {
                Ok(value) => return Some(value),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let state = self.lock();
                    if !state.parked[cpu] && state.jobs[cpu].is_some() {
                        return None;
                    }
                }
            }
        }
    }

    /// Adds a software breakpoint at a linear address. With `int3` breakpoints, vCPU
    /// `cpu` translates it and the byte is written now. False if it cannot be placed.
    pub fn add_sw_breakpoint(&self, cpu: usize, linear: u64) -> bool {
        if self.lock().breakpoints.contains(&linear) {
            return true;
        }
        if self.host.int3 {
            let patched = self.on_cpu(cpu, move |access| {
                let physical = access.translate(linear)?;
                let original = access.memory.read_obj::<u8>(GuestAddress(physical)).ok()?;
                access.memory.write_obj(INT3, GuestAddress(physical)).ok()?;
                Some(PatchedBreakpoint {
                    linear,
                    physical,
                    original,
                })
            });
            match patched.flatten() {
                Some(patch) => self.lock().patched.push(patch),
                None => return false,
            }
        }
        self.lock().breakpoints.push(linear);
        true
    }

    /// Removes a software breakpoint (and its `int3`). False if there was none.
    pub fn remove_sw_breakpoint(&self, cpu: usize, linear: u64) -> bool {
        let mut state = self.lock();
        let Some(position) = state.breakpoints.iter().position(|&b| b == linear) else {
            return false;
        };
        state.breakpoints.remove(position);
        if let Some(index) = state.patched.iter().position(|p| p.linear == linear) {
            let patch = state.patched.remove(index);
            drop(state);
            // Put the guest's own byte back (if the guest has not overwritten the int3).
            let restored = self.on_cpu(cpu, move |access| {
                let now = access.memory.read_obj::<u8>(GuestAddress(patch.physical));
                if now.is_ok_and(|byte| byte == INT3) {
                    let _ = access
                        .memory
                        .write_obj(patch.original, GuestAddress(patch.physical));
                }
            });
            return restored.is_some();
        }
        true
    }

    /// Adds a hardware breakpoint or watchpoint; false when every debug register is taken
    /// (or the host has none).
    pub fn add_hw_point(&self, point: HwPoint) -> bool {
        let mut state = self.lock();
        let supported = match point.kind {
            HwKind::Execute => self.host.execution_breakpoints,
            HwKind::Write | HwKind::ReadWrite => self.host.write_watchpoints,
        };
        if !supported || state.hw_points.len() >= DEBUG_REGISTERS {
            return false;
        }
        state.hw_points.push(point);
        true
    }

    pub fn remove_hw_point(&self, point: HwPoint) -> bool {
        let mut state = self.lock();
        match state.hw_points.iter().position(|p| *p == point) {
            Some(index) => {
                state.hw_points.remove(index);
                true
            }
            None => false,
        }
    }
}

/// A debug register's job for an execution breakpoint at `address`.
pub fn execution_point(address: u64) -> HwPoint {
    HwPoint {
        address,
        kind: HwKind::Execute,
        len: 1,
    }
}

/// DR7's bits for debug register `index`: enabled (local), what it watches, and how wide.
fn dr7_bits(index: usize, point: &HwPoint) -> u64 {
    let condition: u64 = match point.kind {
        HwKind::Execute => 0b00,
        HwKind::Write => 0b01,
        HwKind::ReadWrite => 0b11,
    };
    let len: u64 = match (point.kind, point.len) {
        (HwKind::Execute, _) | (_, 1) => 0b00,
        (_, 2) => 0b01,
        (_, 8) => 0b10,
        _ => 0b11,
    };
    let shift = 16 + 4 * index;
    (1 << (2 * index)) | (condition << shift) | (len << (shift + 2))
}

/// A vCPU's registers as the debugger sees them.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
}

impl CpuState {
    pub fn mode(&self) -> CpuMode {
        CpuMode::of(&self.sregs)
    }
}

/// A parked vCPU, as a job sees it: the vCPU itself and the guest's memory.
pub struct StoppedCpu<'a> {
    pub fd: &'a VcpuFd,
    pub memory: &'a GuestMemoryMmap,
}

impl StoppedCpu<'_> {
    pub fn state(&self) -> Option<CpuState> {
        Some(CpuState {
            regs: self.fd.get_regs().ok()?,
            sregs: self.fd.get_sregs().ok()?,
            fpu: self.fd.get_fpu().unwrap_or_default(),
        })
    }

    /// Writes the general-purpose registers, RIP and RFLAGS (not the segments, which gdb
    /// cannot set consistently with their descriptors).
    pub fn set_regs(&self, regs: &kvm_regs) -> bool {
        self.fd.set_regs(regs).is_ok()
    }

    /// The guest-physical address of a linear one, through this vCPU's page tables (none
    /// without paging).
    pub fn translate(&self, linear: u64) -> Option<u64> {
        let sregs = self.fd.get_sregs().ok()?;
        if sregs.cr0 & CR0_PG == 0 {
            return Some(linear & 0xffff_ffff);
        }
        let translation = self.fd.translate_gva(linear).ok()?;
        (translation.valid != 0).then_some(translation.physical_address)
    }

    /// Reads guest memory at a linear address, page by page; how many bytes it could read.
    pub fn read_linear(&self, linear: u64, data: &mut [u8]) -> usize {
        self.for_each_page(linear, data.len(), |physical, range| {
            self.memory
                .read_slice(&mut data[range], GuestAddress(physical))
                .is_ok()
        })
    }

    /// Writes guest memory at a linear address; how many bytes it could write.
    pub fn write_linear(&self, linear: u64, data: &[u8]) -> usize {
        self.for_each_page(linear, data.len(), |physical, range| {
            self.memory
                .write_slice(&data[range], GuestAddress(physical))
                .is_ok()
        })
    }

    /// Calls `access` for each page-sized piece of `len` bytes at `linear`, with its physical
    /// address and its range in the buffer, until a piece fails; the bytes done.
    fn for_each_page(
        &self,
        linear: u64,
        len: usize,
        mut access: impl FnMut(u64, std::ops::Range<usize>) -> bool,
    ) -> usize {
        let mut done = 0;
        while done < len {
            let address = linear.wrapping_add(done as u64);
            let in_page = (4096 - (address % 4096)) as usize;
            let piece = in_page.min(len - done);
            let Some(physical) = self.translate(address) else {
                break;
            };
            if !access(physical, done..done + piece) {
                break;
            }
            done += piece;
        }
        done
    }
}

/// What this host's KVM does for a debugger, tried rather than assumed (docs/gdb.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbedDebugSupport {
    /// KVM stops the guest at an `int3` (`KVM_GUESTDBG_USE_SW_BP`). kvm_pvm delivers it to the
    /// guest's own interrupt table instead, and so does nested SVM under QEMU's TCG (the
    /// hardware-KVM rig), whose emulated CPU checks only the software-interrupt intercept.
    pub int3: bool,
    /// A debug register set through `KVM_GUESTDBG_USE_HW_BP` stops the guest before an
    /// instruction at its address.
    pub execution_breakpoints: bool,
    /// ... and after a write to its address.
    pub write_watchpoints: bool,
}

/// Tries, once per process and only with a debugger, what the host's KVM does for one: each
/// in a scratch VM of one real-mode vCPU running a few bytes of code.
pub fn probe_debug_support(kvm: &Kvm) -> ProbedDebugSupport {
    static PROBED: OnceLock<ProbedDebugSupport> = OnceLock::new();
    *PROBED.get_or_init(|| {
        const NOP: u8 = 0x90;
        const HLT: u8 = 0xf4;
        // int3; hlt, with the guest's #BP vector pointing at the hlt: KVM_EXIT_DEBUG if KVM
        // stops at the int3, KVM_EXIT_HLT if the guest took it.
        let int3 = probe(kvm, &[INT3, HLT], KVM_GUESTDBG_USE_SW_BP, [0, 0])
            .is_some_and(|(exception, _)| exception == BP_VECTOR);
        // nop; nop; hlt, with DR0 on the second nop.
        let at = REAL_MODE_LOAD_ADDRESS + 1;
        let execute = execution_point(at);
        let execution_breakpoints = probe(
            kvm,
            &[NOP, NOP, HLT],
            KVM_GUESTDBG_USE_HW_BP,
            [at, dr7_bits(0, &execute)],
        )
        .is_some_and(|(exception, dr6)| exception == DB_VECTOR && dr6 & 1 != 0);
        // mov %al, 0x100 (DS:0x100); hlt, with DR0 watching that byte.
        let data = REAL_MODE_LOAD_ADDRESS + 0x100;
        let write = HwPoint {
            address: data,
            kind: HwKind::Write,
            len: 1,
        };
        let write_watchpoints = probe(
            kvm,
            &[0xa2, 0x00, 0x01, HLT],
            KVM_GUESTDBG_USE_HW_BP,
            [data, dr7_bits(0, &write)],
        )
        .is_some_and(|(exception, dr6)| exception == DB_VECTOR && dr6 & 1 != 0);
        ProbedDebugSupport {
            int3,
            execution_breakpoints,
            write_watchpoints,
        }
    })
}

/// Runs `code` at 1000:0000 in a scratch VM with guest debugging `control` and DR0/DR7 =
/// `registers`, and returns the exception and DR6 of a `KVM_EXIT_DEBUG`; `None` for any other
/// exit (the guest's `hlt`) or a failure.
fn probe(kvm: &Kvm, code: &[u8], control: u32, registers: [u64; 2]) -> Option<(u32, u64)> {
    // Declared first, dropped last: the RAM outlives the VM that maps it.
    let memory = create_guest_memory(MIN_MEMORY_SIZE).ok()?;
    memory
        .write_slice(code, GuestAddress(REAL_MODE_LOAD_ADDRESS))
        .ok()?;
    // The guest's #BP vector (offset, then segment) points at the last byte, a `hlt`.
    let last = code.len() as u32 - 1;
    let vector = (u32::from(REAL_MODE_SEGMENT) << 16) | last;
    memory
        .write_obj(vector, GuestAddress(4 * u64::from(BP_VECTOR)))
        .ok()?;
    let vm = kvm.create_vm().ok()?;
    register_memory_slots(&vm, &memory).ok()?;
    let mut vcpu = vm.create_vcpu(0).ok()?;
    let (mut sregs, mut regs) = (vcpu.get_sregs().ok()?, vcpu.get_regs().ok()?);
    setup_real_mode(&mut sregs, &mut regs, REAL_MODE_SEGMENT);
    vcpu.set_sregs(&sregs).ok()?;
    vcpu.set_regs(&regs).ok()?;
    let mut debug = kvm_guest_debug {
        control: KVM_GUESTDBG_ENABLE | control,
        ..Default::default()
    };
    debug.arch.debugreg[0] = registers[0];
    debug.arch.debugreg[7] = registers[1];
    vcpu.set_guest_debug(&debug).ok()?;
    match vcpu.run() {
        Ok(VcpuExit::Debug(arch)) => Some((arch.exception, arch.dr6)),
        _ => None,
    }
}

/// What a debugger front end (the GDB stub) does with a VM: serve its debugger on a thread of
/// its own until the guest ends or the debugger leaves.
pub trait DebugStub: Send {
    /// The guest's name in messages.
    fn serve(self: Box<Self>, target: DebugTarget);
}

/// The VM as a debugger front end sees it.
pub struct DebugTarget {
    pub name: String,
    pub control: Arc<DebugControl>,
    /// The widest mode the guest's image says it runs in (a 64-bit kernel may start in
    /// protected mode), which chooses the register set gdb is told about.
    pub widest_mode: CpuMode,
    /// Put the stub's thread under its seccomp filter once connected.
    pub seccomp: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::kvm::HostKvm;

    #[test]
    fn dr7_enables_each_register_with_its_condition_and_length() {
        let write4 = HwPoint {
            address: 0x1000,
            kind: HwKind::Write,
            len: 4,
        };
        // L1 (bit 2), R/W1 = 01 (bits 20-21), LEN1 = 11 (bits 22-23).
        assert_eq!(dr7_bits(1, &write4), 0b100 | (0b01 << 20) | (0b11 << 22));
        let exec = HwPoint {
            address: 0x1000,
            kind: HwKind::Execute,
            len: 1,
        };
        assert_eq!(dr7_bits(0, &exec), 1);
        let rw8 = HwPoint {
            address: 0x1000,
            kind: HwKind::ReadWrite,
            len: 8,
        };
        assert_eq!(dr7_bits(3, &rw8), (1 << 6) | (0b11 << 28) | (0b10 << 30));
    }

    /// A control for one vCPU on a host that does what `probed` says.
    fn control(probed: ProbedDebugSupport) -> DebugControl {
        DebugControl::new(
            1,
            HostDebugSupport {
                probed,
                block_irq: true,
            },
            |_| {},
        )
    }

    /// kvm_pvm, as probed: neither int3 nor watchpoints, but instruction breakpoints.
    const KVM_PVM: ProbedDebugSupport = ProbedDebugSupport {
        int3: false,
        execution_breakpoints: true,
        write_watchpoints: false,
    };
    const HARDWARE: ProbedDebugSupport = ProbedDebugSupport {
        int3: true,
        execution_breakpoints: true,
        write_watchpoints: true,
    };
    const NOTHING: ProbedDebugSupport = ProbedDebugSupport {
        int3: false,
        execution_breakpoints: false,
        write_watchpoints: false,
    };

    #[test]
    fn breakpoints_take_free_debug_registers_then_single_stepping() {
        let debug = control(KVM_PVM);
        let step = debug.guest_debug(Resume::Step);
        assert_eq!(
            step.control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_BLOCKIRQ
        );
        // No breakpoint: the guest runs undebugged.
        assert_eq!(debug.guest_debug(Resume::Continue).control, 0);
        // The first four go into DR0-DR3.
        for address in 0x10000..0x10004 {
            assert!(debug.add_sw_breakpoint(0, address));
        }
        let settings = debug.guest_debug(Resume::Continue);
        assert_eq!(
            settings.control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP
        );
        assert_eq!(
            settings.arch.debugreg[..4],
            [0x10000, 0x10001, 0x10002, 0x10003]
        );
        assert_eq!(settings.arch.debugreg[7], 0b0101_0101);
        assert_eq!(
            debug.debug_exit(Resume::Continue, DB_VECTOR, 0b0010, 0x10001),
            Some(StopReason::SwBreakpoint)
        );
        // A fifth: found by single-stepping, which then checks every new RIP.
        assert!(debug.add_sw_breakpoint(0, 0x10005));
        assert_eq!(
            debug.guest_debug(Resume::Continue).control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP | KVM_GUESTDBG_SINGLESTEP
        );
        let bs = DR6_SINGLE_STEP;
        assert_eq!(
            debug.debug_exit(Resume::Continue, DB_VECTOR, bs, 0x10005),
            Some(StopReason::SwBreakpoint)
        );
        assert_eq!(
            debug.debug_exit(Resume::Continue, DB_VECTOR, bs, 0x10004),
            None
        );
        assert_eq!(
            debug.debug_exit(Resume::Step, DB_VECTOR, bs, 0x10004),
            Some(StopReason::StepDone)
        );
        assert!(debug.remove_sw_breakpoint(0, 0x10005));
        assert!(!debug.remove_sw_breakpoint(0, 0x10005));
        // kvm_pvm has no watchpoints; instruction breakpoints go before gdb's `break`s.
        let watch = HwPoint {
            address: 0x2000,
            kind: HwKind::Write,
            len: 4,
        };
        assert!(!debug.add_hw_point(watch));
        assert!(debug.add_hw_point(execution_point(0x20000)));
        let settings = debug.guest_debug(Resume::Continue);
        assert_eq!(settings.arch.debugreg[0], 0x20000);
        assert_eq!(
            debug.debug_exit(Resume::Continue, DB_VECTOR, 0b0001, 0x20000),
            Some(StopReason::HwBreakpoint)
        );
    }

    #[test]
    fn without_debug_registers_breakpoints_are_found_by_single_stepping() {
        let debug = control(NOTHING);
        assert!(debug.add_sw_breakpoint(0, 0x10005));
        assert_eq!(
            debug.guest_debug(Resume::Continue).control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
        );
        assert!(!debug.add_hw_point(execution_point(0x10000)));
        assert!(!debug.offers_hw_breakpoints());
        assert!(!debug.offers_watchpoints());
    }

    #[test]
    fn watchpoints_fill_the_debug_registers_and_report_which_fired() {
        let debug = control(HARDWARE);
        let watch = HwPoint {
            address: 0x2000,
            kind: HwKind::Write,
            len: 4,
        };
        for _ in 0..4 {
            assert!(debug.add_hw_point(watch));
        }
        assert!(!debug.add_hw_point(watch), "a fifth debug register");
        let settings = debug.guest_debug(Resume::Continue);
        assert_eq!(
            settings.control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP
        );
        assert_eq!(settings.arch.debugreg[2], 0x2000);
        assert_eq!(
            debug.debug_exit(Resume::Continue, DB_VECTOR, 0b0100, 0x10000),
            Some(StopReason::Watch(watch))
        );
        // A #BP that is not one of ours is the guest's own int3.
        assert_eq!(
            debug.debug_exit(Resume::Continue, BP_VECTOR, 0, 0x10000),
            Some(StopReason::Trap)
        );
    }

    #[test]
    fn the_probe_sees_what_the_hosts_kvm_does() {
        let kvm = Kvm::new().expect("this test runs on the real /dev/kvm");
        let probed = probe_debug_support(&kvm);
        println!("{}: {probed:?}", HostKvm::detect());
        // What docs/gdb.md says of each host we run on: kvm_pvm here; kvm_amd under QEMU's
        // nested SVM in the hardware-KVM rig, whose /init sets MINI_KVM_RIG=1 (it stops at
        // nothing); hardware KVM outside QEMU (everything). Any other host fails.
        let rig = std::env::var_os("MINI_KVM_RIG").is_some_and(|value| value == "1");
        match (HostKvm::detect(), rig) {
            (HostKvm::Pvm, false) => assert_eq!(probed, KVM_PVM),
            (HostKvm::Amd, true) => assert_eq!(probed, NOTHING, "nested SVM under QEMU's TCG"),
            (HostKvm::Amd | HostKvm::Intel, false) => assert_eq!(probed, HARDWARE),
            (module, rig) => panic!(
                "a host this test does not know (KVM module {module}, in the rig: {rig}): \
                 say what its KVM does for a debugger"
            ),
        }
    }

    #[test]
    fn detaching_lets_every_vcpu_run_undebugged() {
        let debug = control(KVM_PVM);
        assert!(debug.add_sw_breakpoint(0, 0x10005));
        debug.detach();
        assert_eq!(debug.guest_debug(Resume::Continue).control, 0);
        assert!(!debug.stop_requested());
    }
}
