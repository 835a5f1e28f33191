//! Processes and the scheduler.
//!
//! A process is a slot in a small table: its own address space (a PML4), its own kernel stack
//! (where the CPU saves its state when it is interrupted), and the [`TrapFrame`] to resume it
//! from. Slot 0 is the idle process, a ring-0 loop around `hlt`, chosen only when nobody else
//! is ready.
//!
//! Scheduling is round-robin and preemptive: every timer tick (10 ms) moves the CPU to the
//! next ready process. A process that must wait (for a line of input, a child, the end of a
//! sleep) is marked so and left out until an interrupt makes it ready again. Switching is
//! returning a different frame from the trap handler (trap.rs).

use core::mem::size_of;

use crate::abi::{
    self, ERROR_AGAIN, ERROR_CHILD, ERROR_INVALID, PROGRAM_NAMES, ProcessInfo, TICK_MS, USER_END,
    USER_STACK_PAGES,
};
use crate::cell::KernelCell;
use crate::console::{self, Out};
use crate::frames::{self, PAGE_SIZE};
use crate::gdt::{self, KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA};
use crate::trap::{self, TrapFrame, resume_frame};
use crate::{cpu, elf, paging};

pub const MAX_PROCESSES: usize = 8;
const IDLE: usize = 0;
/// The shell: when it exits, the machine stops with its status.
const INIT_PID: u32 = 1;
const KERNEL_STACK_SIZE: usize = 16 * 1024;
/// RFLAGS of a new process: interrupts on (bit 9), and bit 1, which is always set.
const RFLAGS_INTERRUPTS_ON: u64 = 0x202;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum State {
    Free,
    Running,
    Ready,
    Sleeping {
        until_tick: u64,
    },
    /// Blocked in `read` until a key arrives.
    Reading,
    /// Blocked in `wait` until the child ends.
    Waiting {
        child: u32,
    },
    /// Ended; its parent has not collected the status yet.
    Zombie {
        status: i64,
    },
}

#[derive(Clone, Copy)]
struct Process {
    pid: u32,
    parent: u32,
    state: State,
    name: &'static [u8],
    /// Timer ticks that found this process running.
    ticks: u64,
    pml4: u64,
    /// Where its state was saved when it last stopped running.
    frame: *mut TrapFrame,
}

const FREE: Process = Process {
    pid: 0,
    parent: 0,
    state: State::Free,
    name: b"",
    ticks: 0,
    pml4: 0,
    frame: core::ptr::null_mut(),
};

struct Table {
    slots: [Process; MAX_PROCESSES],
    current: usize,
    /// The address space in CR3.
    cr3: u64,
    next_pid: u32,
    /// Timer ticks since boot.
    ticks: u64,
}

static TABLE: KernelCell<Table> = KernelCell::new(Table {
    slots: [FREE; MAX_PROCESSES],
    current: IDLE,
    cr3: 0,
    next_pid: 0,
    ticks: 0,
});

#[repr(C, align(16))]
struct KernelStack([u8; KERNEL_STACK_SIZE]);

/// One kernel stack per slot (zeroed memory: no space in the image).
static KERNEL_STACKS: KernelCell<[KernelStack; MAX_PROCESSES]> =
    KernelCell::new([const { KernelStack([0; KERNEL_STACK_SIZE]) }; MAX_PROCESSES]);

fn kernel_stack_top(slot: usize) -> u64 {
    KERNEL_STACKS.get()[slot].0.as_ptr() as u64 + KERNEL_STACK_SIZE as u64
}

/// Puts a frame at the top of `slot`'s kernel stack: resuming it starts the process.
fn initial_frame(slot: usize, frame: TrapFrame) -> *mut TrapFrame {
    let at = (kernel_stack_top(slot) - size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: the slot's own stack, not in use.
    unsafe { at.write(frame) };
    at
}

fn empty_frame() -> TrapFrame {
    // SAFETY: a TrapFrame is plain integers.
    unsafe { core::mem::zeroed() }
}

/// The idle process: `hlt` waits for the next interrupt, in the host's kernel (with KVM's
/// in-kernel interrupt controller, a halted vCPU costs no exit to mini-kvm).
extern "C" fn idle() -> ! {
    loop {
        unsafe { core::arch::asm!("sti", "hlt") };
    }
}

pub fn init() {
    let table = TABLE.get();
    let top = kernel_stack_top(IDLE);
    let frame = initial_frame(
        IDLE,
        TrapFrame {
            rip: idle as *const () as u64,
            cs: u64::from(KERNEL_CODE),
            rflags: RFLAGS_INTERRUPTS_ON,
            rsp: top,
            ss: u64::from(KERNEL_DATA),
            ..empty_frame()
        },
    );
    table.slots[IDLE] = Process {
        pid: 0,
        parent: 0,
        state: State::Ready,
        name: b"idle",
        ticks: 0,
        pml4: paging::kernel_pml4(),
        frame,
    };
    table.cr3 = paging::kernel_pml4();
    table.next_pid = 1;
}

/// Starts `program` (abi::program) as a new process, child of `parent` (0: the kernel).
/// Returns its pid, or a negative error.
pub fn spawn(program: u64, parent: u32) -> Result<u32, i64> {
    let name = *PROGRAM_NAMES.get(program as usize).ok_or(ERROR_INVALID)?;
    let table = TABLE.get();
    let slot = (1..MAX_PROCESSES)
        .find(|&slot| table.slots[slot].state == State::Free)
        .ok_or(ERROR_AGAIN)?;
    let pml4 = paging::new_address_space().ok_or(ERROR_AGAIN)?;
    let Some(entry) = elf::load(pml4).and_then(|entry| map_stack(pml4).map(|()| entry)) else {
        paging::free_address_space(pml4);
        return Err(ERROR_AGAIN);
    };
    let frame = initial_frame(
        slot,
        TrapFrame {
            rip: entry,
            cs: u64::from(USER_CODE),
            rflags: RFLAGS_INTERRUPTS_ON,
            // As if `_start` had been called: RSP + 8 is 16-byte aligned.
            rsp: USER_END - 8,
            ss: u64::from(USER_DATA),
            rdi: program, // the first argument of `_start`
            ..empty_frame()
        },
    );
    let pid = table.next_pid;
    table.next_pid += 1;
    table.slots[slot] = Process {
        pid,
        parent,
        state: State::Ready,
        name,
        ticks: 0,
        pml4,
        frame,
    };
    Ok(pid)
}

/// The user stack: USER_STACK_PAGES pages just below USER_END, with an unmapped page below them
/// (an overflow faults instead of overwriting data).
fn map_stack(pml4: u64) -> Option<()> {
    for page in 1..=USER_STACK_PAGES {
        let frame = frames::alloc()?;
        if paging::map_user(pml4, USER_END - page * PAGE_SIZE, frame, paging::WRITABLE).is_none() {
            frames::free(frame);
            return None;
        }
    }
    Some(())
}

/// Leaves the boot code for the first process; never returns.
pub fn start() -> ! {
    let table = TABLE.get();
    let idle_frame = table.slots[IDLE].frame;
    let frame = schedule(table, idle_frame);
    // SAFETY: a frame built by `init` or `spawn`.
    unsafe { resume_frame(frame) }
}

/// Saves the current process's `frame` and picks who runs next: the next ready process after the
/// current one in slot order (round robin), or idle.
fn schedule(table: &mut Table, frame: *mut TrapFrame) -> *mut TrapFrame {
    let current = table.current;
    table.slots[current].frame = frame;
    if table.slots[current].state == State::Running {
        table.slots[current].state = State::Ready;
    }
    let next = (1..=MAX_PROCESSES)
        .map(|step| (current + step) % MAX_PROCESSES)
        .find(|&slot| slot != IDLE && table.slots[slot].state == State::Ready)
        .unwrap_or(IDLE);
    table.current = next;
    let process = &mut table.slots[next];
    process.state = State::Running;
    // Its kernel stack for the next trap from ring 3, its address space.
    gdt::set_kernel_stack(kernel_stack_top(next));
    if table.cr3 != process.pml4 {
        cpu::write_cr3(process.pml4);
        table.cr3 = process.pml4;
    }
    process.frame
}

/// IRQ 0: count the tick, wake the sleepers whose time has come, and move on to the next
/// process (preemption).
///
/// Unless the tick interrupted the kernel itself (ring 0, and not the idle loop): that is the
/// kernel waiting for a device on behalf of the current process (virtio.rs), with interrupts on
/// for the device's. The kernel is never preempted: it goes on waiting, and the process is
/// switched at a tick that finds it in ring 3.
pub fn timer_tick(frame: *mut TrapFrame) -> *mut TrapFrame {
    let table = TABLE.get();
    table.ticks += 1;
    table.slots[table.current].ticks += 1;
    let now = table.ticks;
    for process in table.slots.iter_mut() {
        if let State::Sleeping { until_tick } = process.state
            && until_tick <= now
        {
            process.state = State::Ready;
        }
    }
    // SAFETY: the frame trap_dispatch was given.
    let in_the_kernel = !unsafe { &*frame }.in_user_mode() && table.current != IDLE;
    if in_the_kernel {
        return frame;
    }
    schedule(table, frame)
}

/// A key arrived: every process blocked in `read` tries again.
pub fn wake_readers() {
    for process in TABLE.get().slots.iter_mut() {
        if process.state == State::Reading {
            process.state = State::Ready;
        }
    }
}

/// After an interrupt that may have woken someone: if the CPU was idle, switch now rather than
/// at the next tick.
pub fn run_woken(frame: *mut TrapFrame) -> *mut TrapFrame {
    let table = TABLE.get();
    let anyone_ready = table.slots[1..]
        .iter()
        .any(|process| process.state == State::Ready);
    if table.current == IDLE && anyone_ready {
        schedule(table, frame)
    } else {
        frame
    }
}

/// The current process waits (`state`); another one runs.
pub fn block_current(frame: *mut TrapFrame, state: State) -> *mut TrapFrame {
    let table = TABLE.get();
    table.slots[table.current].state = state;
    schedule(table, frame)
}

pub fn yield_current(frame: *mut TrapFrame) -> *mut TrapFrame {
    schedule(TABLE.get(), frame)
}

pub fn sleep_current(frame: *mut TrapFrame, milliseconds: u64) -> *mut TrapFrame {
    let until_tick = TABLE.get().ticks + milliseconds.div_ceil(TICK_MS);
    block_current(frame, State::Sleeping { until_tick })
}

/// The current process ends with `status`: its memory goes back to the frame allocator, its
/// parent (blocked in `wait`) wakes up. When the shell ends, the machine stops.
pub fn exit_current(frame: *mut TrapFrame, status: i64) -> *mut TrapFrame {
    let table = TABLE.get();
    let process = table.slots[table.current];
    if process.pid == INIT_PID {
        console::exit(status as u8);
    }
    // Leave its address space before taking it apart.
    cpu::write_cr3(paging::kernel_pml4());
    table.cr3 = paging::kernel_pml4();
    paging::free_address_space(process.pml4);
    // Nobody waits for the kernel's own children (bgcount): their slot is free at once.
    table.slots[table.current].state = if process.parent == 0 {
        State::Free
    } else {
        State::Zombie { status }
    };
    for parent in table.slots.iter_mut() {
        if parent.pid == process.parent && parent.state == (State::Waiting { child: process.pid }) {
            parent.state = State::Ready;
        }
    }
    schedule(table, frame)
}

/// A CPU exception in ring 3: the process is killed (status 128 + the vector, as a Unix shell
/// reports a signal), with a message; everything else goes on.
pub fn kill_current(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: the frame trap_dispatch was given.
    let trap = unsafe { &*frame };
    let process = TABLE.get().slots[TABLE.get().current];
    let mut out = Out::new();
    out.s(b"os: process ")
        .u(u64::from(process.pid))
        .s(b" (")
        .s(process.name)
        .s(b") killed: ")
        .s(trap::exception_name(trap.vector))
        .s(b" at rip ")
        .hex(trap.rip);
    if trap.vector == trap::PAGE_FAULT {
        out.s(b", address ").hex(cpu::read_cr2());
    }
    out.s(b", error code ").hex(trap.error_code).s(b"\n");
    out.flush();
    exit_current(frame, 128 + trap.vector as i64)
}

/// `wait(pid)`: the child's status once it has ended (its slot is then free), `None` while it
/// runs.
pub fn wait(child: u32) -> Option<i64> {
    let table = TABLE.get();
    let me = table.slots[table.current].pid;
    let Some(process) = table
        .slots
        .iter_mut()
        .find(|p| p.state != State::Free && p.pid == child && p.parent == me)
    else {
        return Some(ERROR_CHILD);
    };
    match process.state {
        State::Zombie { status } => {
            process.state = State::Free;
            Some(status)
        }
        _ => None,
    }
}

pub fn current_pid() -> u32 {
    let table = TABLE.get();
    table.slots[table.current].pid
}

pub fn current_pml4() -> u64 {
    let table = TABLE.get();
    table.slots[table.current].pml4
}

pub fn uptime_ms() -> u64 {
    TABLE.get().ticks * TICK_MS
}

/// Fills up to `capacity` records (already checked: writable user memory); returns how many.
pub fn ps(records: *mut ProcessInfo, capacity: usize) -> usize {
    let table = TABLE.get();
    let mut count = 0;
    for process in table.slots.iter() {
        if count == capacity {
            break;
        }
        let state = match process.state {
            State::Free => continue,
            State::Running => abi::STATE_RUNNING,
            State::Ready => abi::STATE_READY,
            State::Sleeping { .. } => abi::STATE_SLEEPING,
            State::Reading => abi::STATE_READING,
            State::Waiting { .. } => abi::STATE_WAITING,
            State::Zombie { .. } => abi::STATE_ZOMBIE,
        };
        let mut name = [0u8; 16];
        let len = process.name.len().min(name.len());
        name[..len].copy_from_slice(&process.name[..len]);
        let record = ProcessInfo {
            pid: process.pid,
            state,
            ticks: process.ticks,
            name,
        };
        // SAFETY: checked by the system call; `count < capacity`.
        unsafe { records.add(count).write_unaligned(record) };
        count += 1;
    }
    count
}
