//! System calls.
//!
//! A user program makes a system call with `ud2` followed by a marker (abi.rs,
//! `SYSCALL_INSTRUCTION`), the number in RAX and the arguments in RDI, RSI and RDX. `ud2` raises
//! exception 6 (#UD), which the CPU delivers through the IDT on the process's kernel stack, as
//! any exception from ring 3. The #UD handler recognises the marker, does the call, puts the
//! result in RAX and moves RIP past the nine bytes.
//!
//! Why not `syscall` or `int $0x80`: on hosts without hardware virtualization, our KVM runs
//! every guest instruction in its instruction emulator, which implements `int $n` only in real
//! mode, and kvm_pvm takes `syscall` for itself. An exception is the one kind of trap from ring 3
//! it delivers. On hardware KVM `syscall` would be the normal choice (docs/os.md).
//!
//! A call that must wait (`read` before Enter, `wait` before the child ends) leaves RIP on the
//! `ud2`: when the process runs again it makes the same call again, which then finds its line
//! or its child. So the kernel never has to remember a half-done call.

use core::mem::size_of;

use crate::abi::{
    ERROR_FAULT, ERROR_INVALID, ERROR_NO_SYSCALL, FileInfo, NAME_MAX, ProcessInfo,
    SYSCALL_INSTRUCTION, sys,
};
use crate::paging::user_range_ok;
use crate::process::{self, State};
use crate::trap::TrapFrame;
use crate::{console, disk, random, tar, tty};

const INSTRUCTION_LENGTH: u64 = SYSCALL_INSTRUCTION.len() as u64;
/// The most one `write` hands to mini-kvm at once.
const MAX_WRITE: u64 = 64 * 1024;

/// Is the #UD at `trap.rip` our system call instruction (and not a stray `ud2`)?
pub fn is_system_call(trap: &TrapFrame) -> bool {
    if !user_range_ok(process::current_pml4(), trap.rip, INSTRUCTION_LENGTH, false) {
        return false;
    }
    // SAFETY: checked just above: mapped user memory of the current address space.
    let bytes = unsafe { core::ptr::read_unaligned(trap.rip as *const [u8; 9]) };
    bytes == SYSCALL_INSTRUCTION
}

/// Does the system call in `frame`; returns the frame to resume (another process's when the
/// caller blocks, sleeps, yields or exits).
pub fn handle(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: the frame trap_dispatch was given.
    let trap = unsafe { &mut *frame };
    let (number, arg0, arg1, arg2, arg3, arg4) =
        (trap.rax, trap.rdi, trap.rsi, trap.rdx, trap.r10, trap.r8);
    let pml4 = process::current_pml4();
    let result = match number {
        sys::EXIT => return process::exit_current(frame, arg0 as i64),
        sys::WRITE => {
            let length = arg1.min(MAX_WRITE);
            if user_range_ok(pml4, arg0, length, false) {
                // mini-kvm reads the process's buffer through its page tables: one exit.
                console::write_raw(arg0, length);
                length as i64
            } else {
                ERROR_FAULT
            }
        }
        sys::READ if arg1 == 0 => ERROR_INVALID,
        sys::READ if !user_range_ok(pml4, arg0, arg1, true) => ERROR_FAULT,
        sys::READ => match tty::read(arg0 as *mut u8, arg1 as usize) {
            Some(n) => n as i64,
            None => return process::block_current(frame, State::Reading),
        },
        sys::GETPID => i64::from(process::current_pid()),
        sys::YIELD => {
            finish(trap, 0);
            return process::yield_current(frame);
        }
        sys::SLEEP => {
            finish(trap, 0);
            return process::sleep_current(frame, arg0);
        }
        sys::UPTIME => process::uptime_ms() as i64,
        sys::SPAWN => match process::spawn(arg0, process::current_pid()) {
            Ok(pid) => i64::from(pid),
            Err(error) => error,
        },
        sys::WAIT => match process::wait(arg0 as u32) {
            Some(status) => status,
            None => {
                let child = arg0 as u32;
                return process::block_current(frame, State::Waiting { child });
            }
        },
        sys::PS => {
            let bytes = arg1.saturating_mul(size_of::<ProcessInfo>() as u64);
            if user_range_ok(pml4, arg0, bytes, true) {
                process::ps(arg0 as *mut ProcessInfo, arg1 as usize) as i64
            } else {
                ERROR_FAULT
            }
        }
        // The disk and the entropy device: the kernel waits for them inside the call
        // (virtio.rs), so these never block the process the way `read` does.
        sys::LIST => {
            let bytes = arg1.saturating_mul(size_of::<FileInfo>() as u64);
            if user_range_ok(pml4, arg0, bytes, true) {
                flatten(tar::list(arg0 as *mut FileInfo, arg1 as usize).map(|n| n as i64))
            } else {
                ERROR_FAULT
            }
        }
        sys::READ_FILE => match user_name(pml4, arg0, arg1) {
            Err(error) => error,
            Ok(_) if !user_range_ok(pml4, arg2, arg3, true) => ERROR_FAULT,
            Ok((name, length)) => {
                flatten(tar::read(&name[..length], arg2, arg3, arg4).map(|n| n as i64))
            }
        },
        sys::WRITE_FILE => match user_name(pml4, arg0, arg1) {
            Err(error) => error,
            Ok(_) if !user_range_ok(pml4, arg2, arg3, false) => ERROR_FAULT,
            Ok((name, length)) => {
                flatten(tar::write(&name[..length], arg2, arg3).map(|n| n as i64))
            }
        },
        sys::RANDOM => {
            let length = arg1.min(random::MAX as u64);
            if user_range_ok(pml4, arg0, length, true) {
                // SAFETY: checked just above: writable user memory of this process.
                let buffer =
                    unsafe { core::slice::from_raw_parts_mut(arg0 as *mut u8, length as usize) };
                flatten(random::fill(buffer).map(|()| length as i64))
            } else {
                ERROR_FAULT
            }
        }
        sys::DISK_REQUESTS => disk::requests() as i64,
        _ => ERROR_NO_SYSCALL,
    };
    finish(trap, result);
    frame
}

/// A file name from the process: 1 to NAME_MAX bytes, no NUL (tar ends names with one).
fn user_name(pml4: u64, address: u64, length: u64) -> Result<([u8; NAME_MAX], usize), i64> {
    if length == 0 || length > NAME_MAX as u64 {
        return Err(ERROR_INVALID);
    }
    if !user_range_ok(pml4, address, length, false) {
        return Err(ERROR_FAULT);
    }
    let mut name = [0; NAME_MAX];
    let length = length as usize;
    // SAFETY: checked just above.
    unsafe { core::ptr::copy_nonoverlapping(address as *const u8, name.as_mut_ptr(), length) };
    if name[..length].contains(&0) {
        return Err(ERROR_INVALID);
    }
    Ok((name, length))
}

fn flatten(result: Result<i64, i64>) -> i64 {
    result.unwrap_or_else(|error| error)
}

/// The call is done: its result in RAX, and RIP past the system call instruction.
fn finish(trap: &mut TrapFrame, result: i64) {
    trap.rax = result as u64;
    trap.rip += INSTRUCTION_LENGTH;
}
