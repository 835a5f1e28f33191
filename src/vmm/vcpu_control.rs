//! What a vCPU and the set that drives it share (vcpu.rs, vcpus.rs): the request to run, pause
//! or stop, and the state each paused vCPU leaves. Its own file, so that the run loop (vcpu.rs)
//! and the set (vcpus.rs, which starts the run loops) do not import each other.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use kvm_bindings::{KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_UNINITIALIZED};

use super::cpu_report::CpuReport;
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
    pub cpu: CpuReport,
    /// KVM_GET_MP_STATE (KVM_MP_STATE_*), `u32::MAX` if KVM would not say.
    pub mp_state: u32,
}

impl PausedCpu {
    /// Can this CPU never run again by itself? Halted with interrupts off (nothing but an NMI
    /// could wake it, and mini-kvm sends none), or an AP that nobody started.
    pub fn is_idle_for_good(&self) -> bool {
        match self.mp_state {
            KVM_MP_STATE_HALTED => self.cpu.regs.rflags & RFLAGS_IF == 0,
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

    /// Asks every vCPU to run, pause or stop (the set does, vcpus.rs).
    pub(super) fn set(&self, request: ControlRequest) {
        self.request.store(request as u8, Ordering::Release);
        // Wake the parked threads so they see it.
        let _parked = self.lock();
        self.changed.notify_all();
    }

    /// The paused vCPUs' states, by index.
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Option<PausedCpu>>> {
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
