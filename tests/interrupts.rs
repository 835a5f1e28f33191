//! Interrupts delivered by KVM's in-kernel PIC: PIT timer ticks, keyboard scancodes on IRQ 1
//! (input through a pipe), UART input on IRQ 4. Exact outputs.

mod common;

use common::{mini_kvm, require_kvm, test_guest, total_exits};

/// The `interrupts` guest's output for a line of keys `typed`, echoed as `echoed`, whose
/// scancodes (up to Enter's press) are `scancodes`.
fn interrupts_output(echoed: &str, scancodes: &str) -> String {
    format!(
        "interrupts: a small protected-mode kernel\n\
         GDT: kernel and user segments and a TSS\n\
         IDT: exceptions, IRQs 0-15 at vectors 32-47\n\
         PIC: remapped to vectors 32-47; timer and keyboard unmasked\n\
         PIT: channel 0 at 100 Hz; interrupts on\n\
         timer: 10 ticks\n\
         keyboard: type a line, Enter ends it\n\
         {echoed}\n\
         scancodes: {scancodes}\n\
         ring 3: sysexit to user mode\n\
         user: hello from ring 3, through sysenter\n\
         kernel: the user program exited with status 0\n"
    )
}

#[test]
fn interrupts_guest_counts_ticks_reads_keys_and_makes_system_calls() {
    require_kvm();
    let run = mini_kvm(&["run", "--stats", "interrupts"], b"hi\n");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout_text(),
        interrupts_output("hi", "23 a3 17 97 1c"),
        "{run:?}"
    );
    // The guest sleeps in `hlt` between interrupts, in the kernel: few exits to mini-kvm.
    assert!(total_exits(&run.stderr) < 100, "{run:?}");
}

#[test]
fn every_kind_of_key_arrives_as_its_scancodes() {
    require_kvm();
    // Shifted letter, Shift-digit, Ctrl-C, arrows (both ANSI forms), Tab, Backspace (DEL),
    // Escape alone, a shifted punctuation key, Enter.
    let typed = b"Ab!\x03\x1b[A\x1bOD\t\x7f\x1b~\n";
    let run = mini_kvm(&["run", "interrupts"], typed);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout_text(),
        interrupts_output(
            "Ab!^C[up][left][tab][bs][esc]~",
            "2a 1e 9e aa 30 b0 2a 02 82 aa 1d 2e ae 9d e0 48 e0 c8 e0 4b e0 cb 0f 8f 0e 8e 01 81 \
             2a 29 a9 aa 1c"
        ),
        "{run:?}"
    );
}

#[test]
fn uart_input_raises_irq_4() {
    require_kvm();
    let guest = test_guest("uart_irq");
    let run = mini_kvm(
        &["run", "--irqchip", "--stats", guest.to_str().unwrap()],
        b"abc\n",
    );
    assert_eq!(
        (run.status, run.stdout_text().as_str()),
        (0, "abc\n"),
        "{run:?}"
    );
    // Interrupt-driven: one status read per byte, no polling loop.
    assert!(
        run.stderr.contains("0x03fd in                     4  uart"),
        "{run:?}"
    );
}

#[test]
fn a_reset_through_the_keyboard_controller_is_still_a_reboot() {
    require_kvm();
    // `mov $0xfe,%al; out %al,$0x64`, in protected mode (with the irqchip and the keyboard).
    let image = common::scratch("reboot").join("reboot.bin");
    std::fs::write(&image, [0xb0, 0xfe, 0xe6, 0x64]).unwrap();
    let run = mini_kvm(
        &["run", "--mode", "protected", image.to_str().unwrap()],
        b"",
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stderr,
        "mini-kvm: guest 'reboot.bin' asked for a reboot (the i8042's reset line or the ACPI \
         reset register): stopped\n",
        "{run:?}"
    );
}
