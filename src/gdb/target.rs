//! The guest as a `gdbstub` target: each vCPU is a thread (thread N+1 is vCPU N), registers and
//! memory are read on the parked vCPU's own thread, and every stop is all-stop.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use gdbstub::common::{Signal, Tid};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{BaseStopReason, MultiThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};

use super::connection::GdbConnection;
use super::registers::X86View;
use crate::arch::CpuMode;
use crate::vmm::debug::{
    DebugControl, DebugEvent, HwKind, HwPoint, Resume, StopEvent, StopReason, execution_point,
};

/// The error of a target operation that cannot go on (a vCPU that ended under gdb's feet).
pub type TargetFault = &'static str;

/// A guest seen through gdb's register set `A`.
pub struct GuestTarget<A> {
    control: Arc<DebugControl>,
    /// The resume actions gdb is assembling (`vCont`), by vCPU.
    actions: Vec<Option<Resume>>,
    /// gdb named no default action: the vCPUs it did not name stay stopped.
    scheduler_locked: bool,
    /// The target description gdb reads (registers and architecture).
    description: &'static str,
    arch: PhantomData<A>,
}

/// i386's registers, named as the 8086: gdb then disassembles 16-bit code as such (it ignores
/// `set architecture i8086` when a target description names i386).
const REAL_MODE_DESCRIPTION: &str = r#"<target version="1.0"><architecture>i8086</architecture><osabi>none</osabi><feature name="org.gnu.gdb.i386.sse"></feature></target>"#;

impl<A: X86View> GuestTarget<A> {
    /// The target of a guest that starts in `entry_mode`.
    pub fn new(control: Arc<DebugControl>, entry_mode: CpuMode) -> GuestTarget<A> {
        let cpus = control.cpus();
        let description = match entry_mode {
            CpuMode::Real => REAL_MODE_DESCRIPTION,
            _ => A::target_description_xml().unwrap_or_default(),
        };
        GuestTarget {
            control,
            actions: vec![None; cpus],
            scheduler_locked: false,
            description,
            arch: PhantomData,
        }
    }
}

pub fn tid_of(cpu: usize) -> Tid {
    Tid::new(cpu + 1).expect("cpu + 1 is never 0")
}

fn cpu_of(tid: Tid) -> usize {
    tid.get() - 1
}

impl<A: X86View> Target for GuestTarget<A> {
    type Arch = A;
    type Error = TargetFault;

    fn base_ops(&mut self) -> BaseOps<'_, A, TargetFault> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    // gdb would write its own int3 bytes if we had no Z0 packet; we do.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

impl<A: X86View> TargetDescriptionXmlOverride for GuestTarget<A> {
    fn target_description_xml(
        &self,
        _annex: &[u8],
        offset: u64,
        length: usize,
        buffer: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let bytes = self.description.as_bytes();
        let start = (offset as usize).min(bytes.len());
        let len = length.min(buffer.len()).min(bytes.len() - start);
        buffer[..len].copy_from_slice(&bytes[start..start + len]);
        Ok(len)
    }
}

impl<A: X86View> MultiThreadBase for GuestTarget<A> {
    fn read_registers(&mut self, registers: &mut A::Registers, tid: Tid) -> TargetResult<(), Self> {
        let state = self
            .control
            .on_cpu(cpu_of(tid), |cpu| cpu.state())
            .flatten()
            .ok_or(TargetError::NonFatal)?;
        A::read(&state, registers);
        Ok(())
    }

    fn write_registers(&mut self, registers: &A::Registers, tid: Tid) -> TargetResult<(), Self> {
        let cpu = cpu_of(tid);
        let mut state = self
            .control
            .on_cpu(cpu, |cpu| cpu.state())
            .flatten()
            .ok_or(TargetError::NonFatal)?;
        A::write(registers, &state.sregs, &mut state.regs);
        let regs = state.regs;
        match self.control.on_cpu(cpu, move |cpu| cpu.set_regs(&regs)) {
            Some(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn read_addrs(
        &mut self,
        start: A::Usize,
        data: &mut [u8],
        tid: Tid,
    ) -> TargetResult<usize, Self> {
        let address = A::address(start);
        let len = data.len();
        let read = self.control.on_cpu(cpu_of(tid), move |cpu| {
            let mut buffer = vec![0u8; len];
            let done = cpu.read_linear(address, &mut buffer);
            buffer.truncate(done);
            buffer
        });
        match read {
            // Nothing readable there: gdb says "Cannot access memory at address".
            Some(bytes) if !bytes.is_empty() => {
                data[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_addrs(&mut self, start: A::Usize, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let address = A::address(start);
        let bytes = data.to_vec();
        let written = self
            .control
            .on_cpu(cpu_of(tid), move |cpu| cpu.write_linear(address, &bytes));
        match written {
            Some(done) if done == data.len() => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn list_active_threads(&mut self, register: &mut dyn FnMut(Tid)) -> Result<(), TargetFault> {
        for cpu in 0..self.control.cpus() {
            register(tid_of(cpu));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl<A: X86View> MultiThreadResume for GuestTarget<A> {
    fn resume(&mut self) -> Result<(), TargetFault> {
        let default = (!self.scheduler_locked).then_some(Resume::Continue);
        let actions = self
            .actions
            .iter()
            .map(|action| action.or(default))
            .collect();
        self.control.resume(actions);
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), TargetFault> {
        self.actions.iter_mut().for_each(|action| *action = None);
        self.scheduler_locked = false;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), TargetFault> {
        self.set_action(tid, signal, Resume::Continue)
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<A: X86View> GuestTarget<A> {
    fn set_action(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
        action: Resume,
    ) -> Result<(), TargetFault> {
        if signal.is_some() {
            return Err("mini-kvm cannot deliver a signal to a vCPU: resume without one");
        }
        let slot = self.actions.get_mut(cpu_of(tid)).ok_or("no such vCPU")?;
        *slot = Some(action);
        Ok(())
    }
}

impl<A: X86View> MultiThreadSingleStep for GuestTarget<A> {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), TargetFault> {
        self.set_action(tid, signal, Resume::Step)
    }
}

impl<A: X86View> MultiThreadSchedulerLocking for GuestTarget<A> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), TargetFault> {
        self.scheduler_locked = true;
        Ok(())
    }
}

impl<A: X86View> Breakpoints for GuestTarget<A> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    // Only what the host's KVM was seen to do (vmm/debug.rs, probe_debug_support).
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        self.control.offers_hw_breakpoints().then_some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        self.control.offers_watchpoints().then_some(self)
    }
}

impl<A: X86View> SwBreakpoint for GuestTarget<A> {
    fn add_sw_breakpoint(&mut self, address: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.control.add_sw_breakpoint(0, A::address(address)))
    }

    fn remove_sw_breakpoint(
        &mut self,
        address: A::Usize,
        _kind: usize,
    ) -> TargetResult<bool, Self> {
        Ok(self.control.remove_sw_breakpoint(0, A::address(address)))
    }
}

fn watch_point(address: u64, len: u64, kind: WatchKind) -> HwPoint {
    HwPoint {
        address,
        kind: match kind {
            WatchKind::Write => HwKind::Write,
            // x86 has no read-only watchpoint: a read watchpoint also fires on writes.
            WatchKind::Read | WatchKind::ReadWrite => HwKind::ReadWrite,
        },
        len,
    }
}

impl<A: X86View> HwBreakpoint for GuestTarget<A> {
    fn add_hw_breakpoint(&mut self, address: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self
            .control
            .add_hw_point(execution_point(A::address(address))))
    }

    fn remove_hw_breakpoint(
        &mut self,
        address: A::Usize,
        _kind: usize,
    ) -> TargetResult<bool, Self> {
        Ok(self
            .control
            .remove_hw_point(execution_point(A::address(address))))
    }
}

impl<A: X86View> HwWatchpoint for GuestTarget<A> {
    fn add_hw_watchpoint(
        &mut self,
        address: A::Usize,
        len: A::Usize,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let len = A::address(len);
        // A debug register watches 1, 2, 4 or 8 aligned bytes.
        if !matches!(len, 1 | 2 | 4 | 8) || A::address(address) % len != 0 {
            return Ok(false);
        }
        Ok(self
            .control
            .add_hw_point(watch_point(A::address(address), len, kind)))
    }

    fn remove_hw_watchpoint(
        &mut self,
        address: A::Usize,
        len: A::Usize,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self
            .control
            .remove_hw_point(watch_point(A::address(address), A::address(len), kind)))
    }
}

impl<A: X86View> ThreadExtraInfo for GuestTarget<A> {
    fn thread_extra_info(&self, tid: Tid, buffer: &mut [u8]) -> Result<usize, TargetFault> {
        let mode = self
            .control
            .on_cpu(cpu_of(tid), |cpu| cpu.state().map(|state| state.mode()))
            .flatten();
        let text = match mode {
            Some(mode) => format!("vCPU {}, {}", cpu_of(tid), mode.name()),
            None => format!("vCPU {}", cpu_of(tid)),
        };
        let len = text.len().min(buffer.len());
        buffer[..len].copy_from_slice(&text.as_bytes()[..len]);
        Ok(len)
    }
}

/// How `gdbstub` waits while the guest runs: for a stop of the VM, or a byte from gdb (Ctrl-C).
pub enum GuestEventLoop<A> {
    #[allow(dead_code)]
    Never(PhantomData<A>),
}

impl<A: X86View> BlockingEventLoop for GuestEventLoop<A> {
    type Target = GuestTarget<A>;
    type Connection = GdbConnection;
    type StopReason = MultiThreadStopReason<A::Usize>;

    fn wait_for_stop_reason(
        target: &mut GuestTarget<A>,
        connection: &mut GdbConnection,
    ) -> Result<
        Event<Self::StopReason>,
        WaitForStopReasonError<TargetFault, <GdbConnection as Connection>::Error>,
    > {
        loop {
            if let Some(event) = target.control.wait_event(Duration::from_millis(10)) {
                return Ok(Event::TargetStopped(stop_reason::<A>(event)));
            }
            if connection
                .byte_ready(Duration::ZERO)
                .map_err(WaitForStopReasonError::Connection)?
            {
                let byte = connection
                    .read()
                    .map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(target: &mut GuestTarget<A>) -> Result<Option<Self::StopReason>, TargetFault> {
        // The stop comes back through wait_for_stop_reason once every vCPU is parked.
        target.control.interrupt();
        Ok(None)
    }
}

/// What gdb is told about a stop.
fn stop_reason<A: X86View>(event: DebugEvent) -> MultiThreadStopReason<A::Usize> {
    let StopEvent { cpu, reason } = match event {
        DebugEvent::Ended(status) => return BaseStopReason::Exited(status),
        DebugEvent::Stopped(stop) => stop,
    };
    let tid = tid_of(cpu);
    match reason {
        StopReason::Interrupted => BaseStopReason::SignalWithThread {
            tid,
            signal: Signal::SIGINT,
        },
        StopReason::StepDone | StopReason::Trap => BaseStopReason::SignalWithThread {
            tid,
            signal: Signal::SIGTRAP,
        },
        StopReason::SwBreakpoint => BaseStopReason::SwBreak(tid),
        StopReason::HwBreakpoint => BaseStopReason::HwBreak(tid),
        StopReason::Watch(point) => BaseStopReason::Watch {
            tid,
            kind: match point.kind {
                HwKind::Write => WatchKind::Write,
                _ => WatchKind::ReadWrite,
            },
            addr: A::usize(point.address),
        },
    }
}
