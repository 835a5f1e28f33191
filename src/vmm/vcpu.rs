//! One vCPU's run loop: `KVM_RUN`, then [`handle_exit`] decides, until the guest ends.
//!
//! The loop knows no addresses and no devices: every `in`/`out` and MMIO access goes to the
//! buses. Registers travel through `kvm_run`'s shared `sync_regs` area (KVM_CAP_SYNC_REGS): KVM
//! stores them there at every exit, and loads RAX back from there when a hypercall has set it, so
//! the hypercall path makes no KVM_GET_REGS / KVM_SET_REGS ioctls.
//!
//! Writes to coalesced ports (coalesced.rs) do not exit at all: KVM appends them to a ring shared
//! with us, which the loop drains, in order, before it handles the next exit and when the guest
//! ends. Between exits, the loop looks at its [`VcpuControl`] (vcpu_control.rs): the vCPU set pauses
//! and stops its vCPUs through it.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use super::coalesced::OutputCoalescing;
use super::cpu_report::{CpuReport, ExitCause};
use super::debug::{BP_VECTOR, DebugControl, Resume, StoppedCpu, Unpark};
use super::exit::{Buses, ExitAction, VmExit, handle_exit};
use super::kvm::HostKvm;
use super::memory::read_prefix;
use super::outcome::Fault;
use super::snapshot::{SnapshotTaker, Taken};
use super::stats::{COALESCED, ExitStats, LiveCounters};
use super::vcpu_control::{ControlRequest, PausedCpu, VcpuControl};
use crate::arch::CpuMode;
use crate::arch::x86::modes::{CR0_PG, RFLAGS_IF};
use crate::devices::hypercall::{CallOutcome, CallRegisters, HypercallHandler, PageTables};
use crate::devices::{AddressSpace, GuestStop};

/// KVM hands `in`/`out` data over in one page of `kvm_run` at most.
const MAX_DATA: usize = 4096;

/// Why a vCPU's run loop returned.
pub enum VcpuEnd {
    /// A device or a hypercall stopped the guest (EXIT, isa-debug-exit, reboot).
    Stopped(GuestStop),
    /// `hlt` with interrupts off, without an in-kernel irqchip.
    Halted,
    Faulted(Fault, Box<CpuReport>),
    /// The vCPU set asked the loop to stop (`--timeout`, the end of the guest on another CPU);
    /// where the vCPU was.
    Interrupted(Box<CpuReport>),
    /// The debugger killed the guest (gdb's `kill`).
    Killed,
    /// `--snapshot`: the guest was saved (or saving it failed) and stops here.
    Snapshotted(Result<Taken, String>),
}

/// How a vCPU reports and what it may rely on.
pub struct VcpuOptions {
    /// `--verbose`: one line per exit on stderr, after this label (the guest's label when several
    /// guests run, and the CPU when the guest has several).
    pub trace: Option<String>,
    /// Coalesced I/O for the output-only ports, when the host has it (`--no-coalesce`: `None`).
    pub coalescing: Option<Arc<OutputCoalescing>>,
    /// `--gdb`: the debugger's controls (vmm/debug.rs).
    pub debug: Option<Arc<DebugControl>>,
    /// `--snapshot`: save the guest when its moment comes.
    pub snapshot: Option<SnapshotTaker>,
}

pub struct Vcpu {
    index: usize,
    fd: VcpuFd,
    memory: GuestMemoryMmap,
    buses: Arc<Buses>,
    hypercalls: HypercallHandler,
    control: Arc<VcpuControl>,
    trace: Option<String>,
    coalescing: Option<Arc<OutputCoalescing>>,
    stats: ExitStats,
    /// The data of the current access: what the guest wrote, or the answer to its read.
    data: Box<[u8; MAX_DATA]>,
    /// Does this host's KVM complete an `in`/`out` before exiting (RIP already past it)?
    /// KVM's instruction emulator does (kvm_pvm); hardware KVM exits with RIP on it.
    io_completed_at_exit: bool,
    live: Arc<LiveCounters>,
    debug: Option<Arc<DebugControl>>,
    /// What the debugger last resumed this vCPU with.
    debug_action: Resume,
    /// The guest-debug settings of a vCPU being single-stepped, made again before each
    /// KVM_RUN (see `enter_guest`).
    stepping: Option<kvm_bindings::kvm_guest_debug>,
    snapshot: Option<SnapshotTaker>,
}

impl Vcpu {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        fd: VcpuFd,
        memory: GuestMemoryMmap,
        buses: Arc<Buses>,
        hypercalls: HypercallHandler,
        control: Arc<VcpuControl>,
        options: VcpuOptions,
        live: Arc<LiveCounters>,
    ) -> Vcpu {
        Vcpu {
            index,
            fd,
            memory,
            buses,
            hypercalls,
            control,
            trace: options.trace,
            coalescing: options.coalescing,
            stats: ExitStats::default(),
            data: Box::new([0; MAX_DATA]),
            io_completed_at_exit: HostKvm::detect() == HostKvm::Pvm,
            live,
            debug: options.debug,
            debug_action: Resume::Continue,
            stepping: None,
            snapshot: options.snapshot,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn stats(&self) -> &ExitStats {
        &self.stats
    }

    /// Runs the guest until it ends, faults, or the vCPU set stops this vCPU.
    pub fn run(&mut self) -> VcpuEnd {
        // Ask KVM to store the registers in kvm_run at every exit (KVM_CAP_SYNC_REGS).
        self.fd.set_sync_valid_reg(SyncReg::Register);
        self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
        if let Some(debug) = &self.debug {
            debug.register_thread(self.index);
        }
        let started = Instant::now();
        let end = self.run_loop();
        if let Some(debug) = &self.debug {
            debug.thread_finished(self.index);
        }
        // Writes the guest made since its last exit.
        self.drain_coalesced();
        self.hypercalls.flush();
        self.stats.total = started.elapsed();
        self.stats.vcpu_time = self.stats.total;
        end
    }

    fn run_loop(&mut self) -> VcpuEnd {
        let mut exit_number: u64 = 0;
        loop {
            match self.control.request() {
                ControlRequest::Run => {}
                ControlRequest::Pause => {
                    let state = self.paused_state();
                    self.control.park(self.index, state);
                    continue;
                }
                ControlRequest::Stop => return self.interrupted(),
            }
            // Between two exits, with the last one handled and the coalesced writes before it
            // drained: the guest's output up to here is all out.
            if self
                .snapshot
                .as_ref()
                .is_some_and(|taker| taker.due(exit_number))
            {
                return self.take_snapshot();
            }
            if let Some(debug) = self.debug.clone()
                && debug.stop_requested()
            {
                match self.park_for_debugger(&debug) {
                    Unpark::Run(action) => self.debug_action = action,
                    Unpark::Stop => return self.interrupted(),
                    Unpark::Kill => return VcpuEnd::Killed,
                }
            }
            let exit = self.enter_guest();
            // Coalesced writes happened before this exit: they go first, in order.
            self.drain_coalesced();
            if exit == VmExit::Interrupted {
                // A kick: the control request says why (a kick is not counted as an exit).
                continue;
            }
            exit_number += 1;
            self.live.count_exit();
            self.stats.count_exit(exit.reason());
            if let (VmExit::Debug { exception, dr6 }, Some(debug)) = (&exit, &self.debug) {
                // A step or a breakpoint: stop the VM for the debugger, or (a step of
                // breakpoint emulation elsewhere) go on.
                let mut pc = self.linear_pc();
                if *exception == BP_VECTOR
                    && !debug.is_patched(pc)
                    && debug.is_patched(pc.wrapping_sub(1))
                {
                    // RIP past our int3: back onto the breakpoint, where gdb expects it.
                    self.fd.sync_regs_mut().regs.rip -= 1;
                    self.fd.set_sync_dirty_reg(SyncReg::Register);
                    pc -= 1;
                }
                if let Some(reason) = debug.debug_exit(self.debug_action, *exception, *dr6, pc) {
                    debug.report_stop(self.index, reason);
                }
                continue;
            }
            // A write is traced before its device acts (what it prints follows the trace line);
            // a read after, so the trace can show the answer.
            if self.trace.is_some() && !exit.is_read() {
                self.trace_exit(exit_number, &exit);
            }
            let len = exit.data_len().min(MAX_DATA);
            let action = handle_exit(&exit, &self.buses, &mut self.data[..len], &mut self.stats);
            if self.trace.is_some() && exit.is_read() {
                self.trace_exit(exit_number, &exit);
            }
            match action {
                ExitAction::Resume | ExitAction::Kicked => {}
                ExitAction::CompleteRead => self.complete_read(&exit),
                ExitAction::Hypercall(number) => {
                    if let CallOutcome::Exit(status) = self.hypercall(number) {
                        return VcpuEnd::Stopped(GuestStop::Exit(status));
                    }
                }
                ExitAction::Stop(stop) => return VcpuEnd::Stopped(stop),
                ExitAction::Halt => {
                    // With interrupts off nothing can wake this CPU: the guest has ended. The
                    // sync_regs area KVM filled at this exit tells, without an ioctl; the full
                    // register report is only for the report.
                    if self.fd.sync_regs().regs.rflags & RFLAGS_IF == 0 {
                        return VcpuEnd::Halted;
                    }
                    let mut report = self.report();
                    report.caused_by = Some(report.exit_instruction(ExitCause::Halt, true));
                    return VcpuEnd::Faulted(Fault::HaltedForever, Box::new(report));
                }
                ExitAction::Fault(fault) => {
                    let mut report = self.report();
                    if matches!(exit, VmExit::MmioWrite { .. }) {
                        report.caused_by =
                            Some(report.exit_instruction(ExitCause::MemoryWrite, true));
                    }
                    return VcpuEnd::Faulted(fault, Box::new(report));
                }
            }
            if let (VmExit::IoOut { port, .. }, Some(coalescing)) = (&exit, &self.coalescing) {
                coalescing.note_write(u64::from(*port));
            }
            if self.io_completed_at_exit
                && exit.data_len() > 0
                && let Some(debug) = &self.debug
            {
                // The access's instruction is done (kvm_pvm): a step is over, and it may have
                // led to a breakpoint.
                let pc = self.linear_pc();
                if let Some(reason) = debug.instruction_completed(self.debug_action, pc) {
                    debug.report_stop(self.index, reason);
                }
            }
        }
    }

    /// Saves the guest to its snapshot (vmm/snapshot/) and ends the loop.
    fn take_snapshot(&mut self) -> VcpuEnd {
        let Some(taker) = self.snapshot.take() else {
            return self.interrupted();
        };
        // KVM finishes the last access (the register of an `in`, a hypercall's RAX) at the next
        // KVM_RUN: one that returns at once (immediate_exit) finishes it without running the
        // guest, so the registers saved are those after the instruction, as the guest will go on.
        self.fd.set_kvm_immediate_exit(1);
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
        let clock = self.hypercalls.clock_ns();
        let taken = taker
            .take(
                &self.fd,
                &self.memory,
                [&self.buses.pio, &self.buses.mmio],
                clock,
            )
            .map_err(|error| error.to_string());
        VcpuEnd::Snapshotted(taken)
    }

    /// Where the loop ends when the vCPU set stops it: where the vCPU was.
    fn interrupted(&mut self) -> VcpuEnd {
        let mut report = self.report();
        report.never_started = self.waits_for_sipi();
        VcpuEnd::Interrupted(Box::new(report))
    }

    /// Parks this vCPU for the debugger until it resumes it, then applies the debugger's
    /// settings (single-step, breakpoints) for the run ahead.
    fn park_for_debugger(&mut self, debug: &DebugControl) -> Unpark {
        // KVM finishes an access at the next KVM_RUN (the register of an `in` or an MMIO read)
        // and loads a hypercall's result from kvm_run then: a KVM_RUN that returns at once
        // (immediate_exit, docs/kvm-api.md) does both without running the guest, so that the
        // debugger reads the registers as they are after the instruction, and its own writes
        // are not undone.
        self.fd.set_kvm_immediate_exit(1);
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
        let control = Arc::clone(&self.control);
        let stop_wanted = move || control.request() == ControlRequest::Stop;
        let mut stopped = StoppedCpu {
            fd: &self.fd,
            memory: &self.memory,
        };
        let unpark = debug.park(self.index, &mut stopped, &stop_wanted);
        if let Unpark::Run(action) = unpark {
            let settings = debug.guest_debug(action);
            // A host without guest debugging refuses; the vCPU then runs undebugged.
            let _ = self.fd.set_guest_debug(&settings);
            self.stepping =
                (settings.control & kvm_bindings::KVM_GUESTDBG_SINGLESTEP != 0).then_some(settings);
        }
        unpark
    }

    /// The linear address of the next instruction, from the registers KVM stored at the exit.
    fn linear_pc(&self) -> u64 {
        let sync = self.fd.sync_regs();
        if CpuMode::of(&sync.sregs) == CpuMode::Long64 {
            sync.regs.rip
        } else {
            sync.sregs.cs.base.wrapping_add(sync.regs.rip) & 0xffff_ffff
        }
    }

    /// One KVM_RUN, its exit copied out of `kvm_run` (the data of a write into `self.data`), so
    /// that the loop may use the vCPU again while it handles the exit.
    fn enter_guest(&mut self) -> VmExit {
        if let Some(settings) = &self.stepping {
            // KVM single-steps with the guest's trap flag, which it keeps across an instruction
            // it emulates (an MMIO access, an `in` it completes, a hypercall's registers) only
            // at the RIP where KVM_SET_GUEST_DEBUG was last made: made before every step, as
            // QEMU does, the stepping cannot stop after one (seen on kvm_amd in the rig).
            let _ = self.fd.set_guest_debug(settings);
        }
        let entered = Instant::now();
        let result = self.fd.run();
        self.stats.in_guest += entered.elapsed();
        let copy = |data: &[u8], buffer: &mut [u8; MAX_DATA]| {
            let len = data.len().min(MAX_DATA);
            buffer[..len].copy_from_slice(&data[..len]);
            len
        };
        match result {
            Ok(VcpuExit::IoIn(port, data)) => VmExit::IoIn {
                port,
                len: data.len().min(MAX_DATA),
            },
            Ok(VcpuExit::IoOut(port, data)) => VmExit::IoOut {
                port,
                len: copy(data, &mut self.data),
            },
            Ok(VcpuExit::MmioRead(address, data)) => VmExit::MmioRead {
                address,
                len: data.len().min(MAX_DATA),
            },
            Ok(VcpuExit::MmioWrite(address, data)) => VmExit::MmioWrite {
                address,
                len: copy(data, &mut self.data),
            },
            Ok(VcpuExit::Hlt) => VmExit::Hlt,
            Ok(VcpuExit::Debug(debug)) => VmExit::Debug {
                exception: debug.exception,
                dr6: debug.dr6,
            },
            Ok(VcpuExit::Shutdown) => VmExit::Shutdown,
            Ok(VcpuExit::InternalError) => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // union member KVM filled in.
                let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                VmExit::InternalError { suberror }
            }
            Ok(VcpuExit::FailEntry(reason, _cpu)) => VmExit::FailEntry { reason },
            Ok(other) => VmExit::Other {
                reason: format!("{other:?}"),
            },
            Err(error) if error.errno() == libc::EINTR || error.errno() == libc::EAGAIN => {
                VmExit::Interrupted
            }
            Err(error) => VmExit::RunFailed {
                error: error.to_string(),
            },
        }
    }

    /// Hands the answer of an `in` or an MMIO read to KVM, which finishes the instruction with
    /// it at the next KVM_RUN.
    fn complete_read(&mut self, exit: &VmExit) {
        let len = exit.data_len().min(MAX_DATA);
        let data = &self.data[..len];
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_IO or KVM_EXIT_MMIO (`exit` says which), so the
        // matching union member is the one KVM filled in. For I/O, `data_offset` points inside
        // the kvm_run mapping with room for `size * count` bytes; MMIO data is 8 bytes in place.
        unsafe {
            match exit {
                VmExit::IoIn { .. } => {
                    let io = run.__bindgen_anon_1.io;
                    let room = io.size as usize * io.count as usize;
                    let target =
                        (run as *mut kvm_bindings::kvm_run as *mut u8).add(io.data_offset as usize);
                    std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len().min(room));
                }
                VmExit::MmioRead { .. } => {
                    let mmio = &mut run.__bindgen_anon_1.mmio;
                    let n = data.len().min(mmio.data.len());
                    mmio.data[..n].copy_from_slice(&data[..n]);
                }
                _ => {}
            }
        }
    }

    /// Runs the hypercall `number` with the arguments in this vCPU's registers, and puts its
    /// result in RAX.
    fn hypercall(&mut self, number: u8) -> CallOutcome {
        // Read once from the sync_regs area KVM filled at this exit (no copy of the whole area).
        let sync = self.fd.sync_regs_mut();
        let registers = CallRegisters {
            number,
            args: [sync.regs.rbx, sync.regs.rcx, sync.regs.rsi],
            mode: CpuMode::of(&sync.sregs),
            data_segment_base: sync.sregs.ds.base,
        };
        let paging = sync.sregs.cr0 & CR0_PG != 0;
        let mut page_tables = VcpuPageTables {
            fd: &self.fd,
            paging,
        };
        let outcome = self.hypercalls.handle(&registers, &mut page_tables);
        if let CallOutcome::Result(value) = outcome {
            let regs = &mut self.fd.sync_regs_mut().regs;
            regs.rax = match registers.mode.bits() {
                16 => (regs.rax & !0xffff) | (value & 0xffff),
                32 => value & 0xffff_ffff,
                _ => value,
            };
            // Tell KVM to load the registers from kvm_run at the next KVM_RUN.
            self.fd.set_sync_dirty_reg(SyncReg::Register);
        }
        outcome
    }

    /// Hands the writes KVM queued on the coalesced-I/O ring to their devices, in order.
    fn drain_coalesced(&mut self) {
        let Some(coalescing) = self.coalescing.clone() else {
            return;
        };
        if !coalescing.active() {
            return;
        }
        let _ring = coalescing.lock_ring();
        while let Ok(Some(entry)) = self.fd.coalesced_mmio_read() {
            let port = entry.phys_addr;
            let len = (entry.len as usize).min(entry.data.len());
            let data = &entry.data[..len];
            let device = self.buses.pio.device_name(port);
            self.stats
                .count_at(AddressSpace::Pio, port, COALESCED, device);
            if let Some(label) = &self.trace {
                // Not eprintln!: a trace to a closed stderr must not panic the vCPU.
                let _ = writeln!(
                    crate::console::stderr::stderr(),
                    "{label}  coalesced write: port {port:#06x} ({device}), size {len}, data {}",
                    port_data(data)
                );
            }
            // Only output-only registers are coalesced: their writes never stop the guest.
            let _ = self.buses.pio.write(port, data);
        }
    }

    /// An AP that nobody has started yet (KVM_MP_STATE_UNINITIALIZED or INIT_RECEIVED).
    fn waits_for_sipi(&self) -> bool {
        self.fd.get_mp_state().is_ok_and(|state| {
            matches!(
                state.mp_state,
                kvm_bindings::KVM_MP_STATE_UNINITIALIZED | kvm_bindings::KVM_MP_STATE_INIT_RECEIVED
            )
        })
    }

    /// What the vCPU set sees of a paused vCPU.
    fn paused_state(&mut self) -> PausedCpu {
        let mp_state = self.fd.get_mp_state().map_or(u32::MAX, |s| s.mp_state);
        PausedCpu {
            cpu: self.report(),
            mp_state,
        }
    }

    /// The registers (as KVM stored them at the last exit) and the code bytes at RIP.
    pub fn report(&mut self) -> CpuReport {
        let sync = self.fd.sync_regs();
        let (mut regs, sregs) = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(regs), Ok(sregs)) => (regs, sregs),
            _ => (sync.regs, sync.sregs),
        };
        // A hypercall result not yet loaded by KVM (it is, at the next KVM_RUN) is the truth.
        if self.fd.get_kvm_run().kvm_dirty_regs & u64::from(kvm_bindings::KVM_SYNC_X86_REGS) != 0 {
            regs = sync.regs;
        }
        report_of(&self.fd, &self.memory, regs, sregs)
    }

    /// The `--verbose` line for one exit.
    fn trace_exit(&mut self, number: u64, exit: &VmExit) {
        let sync = self.fd.sync_regs();
        let cpu = report_of(&self.fd, &self.memory, sync.regs, sync.sregs);
        let data = &self.data[..exit.data_len().min(MAX_DATA)];
        let detail = match exit {
            VmExit::IoIn { port, len } | VmExit::IoOut { port, len } => format!(
                "port {port:#06x} ({}) {}, size {len}, data {}",
                self.buses.pio.device_name(u64::from(*port)),
                if exit.is_read() { "in" } else { "out" },
                port_data(data)
            ),
            VmExit::MmioRead { address, len } | VmExit::MmioWrite { address, len } => {
                let device = self.buses.mmio.device_name(*address);
                let what = if exit.is_read() { "read" } else { "write" };
                if device == "unclaimed" {
                    format!("{what} {len} bytes at {address:#x}")
                } else {
                    format!(
                        "{what} {len} bytes at {address:#x} ({device}), data {}",
                        port_data(data)
                    )
                }
            }
            VmExit::InternalError { suberror } => format!("suberror {suberror}"),
            VmExit::FailEntry { reason } => format!("hardware reason {reason:#x}"),
            VmExit::Other { reason } => reason.clone(),
            VmExit::RunFailed { error } => error.clone(),
            VmExit::Debug { exception, dr6 } => format!("exception {exception}, DR6 {dr6:#x}"),
            VmExit::Hlt | VmExit::Shutdown | VmExit::Interrupted => String::new(),
        };
        let completed = self.io_completed_at_exit;
        let instruction = match exit {
            VmExit::IoIn { .. } => cpu.exit_instruction(ExitCause::PortIn, completed),
            VmExit::IoOut { .. } => cpu.exit_instruction(ExitCause::PortOut, completed),
            VmExit::Hlt => cpu.exit_instruction(ExitCause::Halt, completed),
            VmExit::MmioWrite { .. } => cpu.exit_instruction(ExitCause::MemoryWrite, completed),
            _ => cpu.instruction(),
        };
        let line = format!(
            "{}exit #{number} {:<8} at {}  {instruction}  {detail}",
            self.trace.as_deref().unwrap_or(""),
            exit.reason(),
            cpu.location(),
        );
        // Not eprintln!: a trace to a closed stderr must not panic the vCPU.
        let _ = writeln!(crate::console::stderr::stderr(), "{}", line.trim_end());
    }
}

/// The calling vCPU's page tables, for hypercall buffers: identity without paging,
/// KVM_TRANSLATE with it.
struct VcpuPageTables<'a> {
    fd: &'a VcpuFd,
    paging: bool,
}

impl PageTables for VcpuPageTables<'_> {
    fn translate(&mut self, linear: u64) -> Option<u64> {
        if !self.paging {
            return Some(linear);
        }
        match self.fd.translate_gva(linear) {
            Ok(translation) if translation.valid != 0 => Some(translation.physical_address),
            _ => None,
        }
    }
}

/// Up to the first 8 bytes of access data, little-endian, for traces.
fn first_bytes(data: &[u8]) -> u64 {
    let mut value = [0u8; 8];
    let shown = data.len().min(8);
    value[..shown].copy_from_slice(&data[..shown]);
    u64::from_le_bytes(value)
}

/// Access data for traces: its value in hex, and a single printable byte as a character too.
fn port_data(data: &[u8]) -> String {
    let value = hex_value(first_bytes(data), data.len());
    match data {
        [byte @ 0x20..=0x7e] => format!("{value} '{}'", *byte as char),
        _ => value,
    }
}

fn hex_value(value: u64, len: usize) -> String {
    match len {
        1 => format!("{:#04x}", value as u8),
        2 => format!("{:#06x}", value as u16),
        4 => format!("{:#010x}", value as u32),
        _ => format!("{value:#x} ({len} bytes)"),
    }
}

/// Builds a register report, reading the code at CS.base + RIP through the guest's page tables.
fn report_of(fd: &VcpuFd, memory: &GuestMemoryMmap, regs: kvm_regs, sregs: kvm_sregs) -> CpuReport {
    let linear = if CpuMode::of(&sregs) == CpuMode::Long64 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    };
    let mut code = [0u8; 15];
    let mut preceding = [0u8; 15];
    let mut page_tables = VcpuPageTables {
        fd,
        paging: sregs.cr0 & CR0_PG != 0,
    };
    let (code_len, preceding_len) = match page_tables.translate(linear) {
        // Stay inside RIP's page: the pages around it may map elsewhere.
        Some(physical) => {
            let in_page = (4096 - (linear % 4096)) as usize;
            let len = code.len().min(in_page);
            let before = preceding.len().min((linear % 4096) as usize);
            (
                read_prefix(memory, physical, &mut code[..len]),
                read_prefix(memory, physical - before as u64, &mut preceding[..before]),
            )
        }
        None => (0, 0),
    };
    CpuReport {
        regs,
        sregs,
        code,
        code_len,
        preceding,
        preceding_len,
        caused_by: None,
        never_started: false,
    }
}
