//! System calls, as the user programs see them: one function each.
//!
//! The instruction is `ud2` and a marker (abi.rs, and docs/os.md for why not `syscall`): the
//! number goes in RAX, the arguments in RDI, RSI and RDX, and the result comes back in RAX. The
//! kernel keeps every other register.

use core::arch::asm;

use crate::abi::{ProcessInfo, sys};

fn system_call(number: u64, arg0: u64, arg1: u64) -> i64 {
    let result: u64;
    unsafe {
        asm!(
            "ud2",
            "nop dword ptr [rax + 0x43535953]", // the marker: 0F 1F 80 "SYSC"
            inout("rax") number => result,
            in("rdi") arg0,
            in("rsi") arg1,
            options(nostack),
        );
    }
    result as i64
}

pub fn exit(status: i64) -> ! {
    system_call(sys::EXIT, status as u64, 0);
    // Never reached: the kernel does not return from exit.
    loop {
        yield_now();
    }
}

pub fn write(bytes: &[u8]) -> i64 {
    system_call(sys::WRITE, bytes.as_ptr() as u64, bytes.len() as u64)
}

/// Bytes of one line (with its '\n', unless it was the last line of the input); 0 at end of
/// input.
pub fn read(buffer: &mut [u8]) -> i64 {
    system_call(sys::READ, buffer.as_mut_ptr() as u64, buffer.len() as u64)
}

pub fn getpid() -> i64 {
    system_call(sys::GETPID, 0, 0)
}

pub fn yield_now() {
    system_call(sys::YIELD, 0, 0);
}

pub fn sleep(milliseconds: u64) {
    system_call(sys::SLEEP, milliseconds, 0);
}

pub fn uptime_ms() -> u64 {
    system_call(sys::UPTIME, 0, 0) as u64
}

pub fn spawn(program: u64) -> i64 {
    system_call(sys::SPAWN, program, 0)
}

pub fn wait(pid: i64) -> i64 {
    system_call(sys::WAIT, pid as u64, 0)
}

pub fn ps(records: &mut [ProcessInfo]) -> usize {
    let count = system_call(sys::PS, records.as_mut_ptr() as u64, records.len() as u64);
    count.max(0) as usize
}
