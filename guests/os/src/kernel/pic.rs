//! The 8259 PIC pair and the 8254 PIT: KVM's in-kernel models (mini-kvm creates them).
//!
//! At reset the PIC delivers IRQ 0-7 at vectors 8-15, on top of the CPU's exceptions, so every
//! PC kernel first moves them ("remaps"): here IRQ n arrives at vector 32 + n. Then only the
//! timer (IRQ 0) and the keyboard (IRQ 1) are unmasked, and the PIT's channel 0 is set to
//! interrupt 100 times a second. Drivers unmask their own IRQ when they find their device.

use crate::abi::TICK_HZ;
use crate::cpu::{inb, outb};

pub const IRQ_BASE: u64 = 32;
pub const TIMER_IRQ: u64 = 0;
pub const KEYBOARD_IRQ: u64 = 1;
/// The slave PIC (IRQ 8-15) is wired to the master's IRQ 2.
const CASCADE_IRQ: u64 = 2;

const PIC1_COMMAND: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_COMMAND: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
const END_OF_INTERRUPT: u8 = 0x20;

const PIT_CHANNEL0: u16 = 0x40;
const PIT_COMMAND: u16 = 0x43;
/// The PIT counts down at 1.193182 MHz.
const PIT_FREQUENCY: u64 = 1_193_182;

pub fn init() {
    // ICW1: initialise, ICW4 follows. ICW2: vector base. ICW3: the slave is on IRQ 2.
    // ICW4: 8086 mode.
    outb(PIC1_COMMAND, 0x11);
    outb(PIC2_COMMAND, 0x11);
    outb(PIC1_DATA, IRQ_BASE as u8);
    outb(PIC2_DATA, IRQ_BASE as u8 + 8);
    outb(PIC1_DATA, 1 << 2);
    outb(PIC2_DATA, 2);
    outb(PIC1_DATA, 0x01);
    outb(PIC2_DATA, 0x01);
    // Masks: a set bit silences that IRQ. Timer and keyboard only.
    outb(PIC1_DATA, !((1 << TIMER_IRQ) | (1 << KEYBOARD_IRQ)) as u8);
    outb(PIC2_DATA, 0xff);

    // Channel 0, low then high byte of the divisor, mode 2 (a periodic rate generator).
    let divisor = (PIT_FREQUENCY / TICK_HZ) as u16;
    outb(PIT_COMMAND, 0x34);
    outb(PIT_CHANNEL0, divisor as u8);
    outb(PIT_CHANNEL0, (divisor >> 8) as u8);
}

/// Lets `irq` through: clears its bit in the mask of its PIC (and, for the slave's IRQ 8-15,
/// the master's cascade line too).
pub fn unmask(irq: u64) {
    if irq >= 8 {
        outb(PIC2_DATA, inb(PIC2_DATA) & !(1 << (irq - 8)));
        outb(PIC1_DATA, inb(PIC1_DATA) & !(1 << CASCADE_IRQ));
    } else {
        outb(PIC1_DATA, inb(PIC1_DATA) & !(1 << irq));
    }
}

/// Tells the PIC the interrupt has been handled: it may deliver the next one.
pub fn end_of_interrupt(irq: u64) {
    if irq >= 8 {
        outb(PIC2_COMMAND, END_OF_INTERRUPT);
    }
    outb(PIC1_COMMAND, END_OF_INTERRUPT);
}
