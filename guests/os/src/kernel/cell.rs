//! Kernel-global state without locks.
//!
//! The kernel runs on one CPU, and always with interrupts off: every way into it is an
//! interrupt gate, which clears IF (the idle loop, which runs with interrupts on, touches no
//! state). So nothing can interrupt kernel code halfway through an update, and a plain cell is
//! enough. The one rule: do not call `get` on a cell while a reference from an earlier `get` of
//! the same cell is still in use.

use core::cell::UnsafeCell;

pub struct KernelCell<T>(UnsafeCell<T>);

// SAFETY: one CPU, interrupts off in the kernel (above): never two users at the same time.
unsafe impl<T> Sync for KernelCell<T> {}

impl<T> KernelCell<T> {
    pub const fn new(value: T) -> KernelCell<T> {
        KernelCell(UnsafeCell::new(value))
    }

    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut T {
        // SAFETY: see the module comment.
        unsafe { &mut *self.0.get() }
    }
}
