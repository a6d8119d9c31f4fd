//! SIGTERM and SIGINT in a rank process. Kubernetes stops a pod (a Kueue
//! eviction, `suspend`, a node drain) with SIGTERM and SIGKILLs it after the
//! grace period; a rank that dies at once loses every step since its last
//! checkpoint. So while training, a signal is only noted: the training loop
//! agrees with every other rank to stop after the current step, saves a
//! checkpoint and exits with 128 + the signal. Outside training the signal
//! keeps its default effect (the process ends), except while a finished rank
//! waits to be stopped ([`wait`]).
//!
//! One handler per signal for the process's whole life, switched by mode:
//! handlers cannot be uninstalled cleanly (signal-hook-registry leaves its
//! handler in place), and a handler may only do async-signal-safe work.

use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::time::Duration;

/// What a signal does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// End the process as the default action would.
    Terminate = 0,
    /// Note the signal for the training loop (or [`wait`]) to act on.
    Note = 1,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Terminate as u8);
static RECEIVED: AtomicI32 = AtomicI32::new(0);
static INSTALL: Once = Once::new();

/// Installs the handlers (once per process; later calls do nothing).
pub fn install() -> std::io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        for signal in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: the action only touches atomics and calls signal(2) and raise(3),
            // which are async-signal-safe.
            let registered =
                unsafe { signal_hook_registry::register(signal, move || on_signal(signal)) };
            if let Err(e) = registered {
                result = Err(e);
                return;
            }
        }
    });
    result
}

fn on_signal(signal: libc::c_int) {
    if MODE.load(Ordering::SeqCst) == Mode::Note as u8 {
        RECEIVED.store(signal, Ordering::SeqCst);
        return;
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe; with the default
    // disposition back, the re-raised signal (delivered once this handler
    // returns) ends the process as if no handler had been installed.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Switches what a signal does from now on (a signal noted already stays noted).
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::SeqCst);
}

/// The signal noted so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Whether a stop was asked for (for [`crate::train::Trainer::set_stop_check`]).
pub fn stop_requested() -> bool {
    received().is_some()
}

/// The shell's exit code for ending on `signal`.
pub fn exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Blocks until SIGTERM or SIGINT arrives (or has arrived already).
pub fn wait() {
    set_mode(Mode::Note);
    while received().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
}
