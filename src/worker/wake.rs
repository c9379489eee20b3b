//! Wake-on-commit. Each running worker publishes its PGPROC number in a small table in
//! shared memory; a transaction that enqueued a job sets their latches when it commits,
//! so a worker starts on the job within a millisecond instead of at its next poll.
//!
//! The commit callback must not fail (an ERROR there is a PANIC): it only reads atomics
//! and calls SetLatch, which cannot fail. A stale slot at worst sets the latch of some
//! other backend, which is a harmless spurious wake-up.

use crate::gucs::MAX_WORKERS;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

#[derive(Default)]
pub struct WorkerSlots {
    /// PGPROC number + 1 of the worker in each slot; 0 when the slot is empty.
    procnos: [AtomicI32; MAX_WORKERS],
}

unsafe impl PGRXSharedMemory for WorkerSlots {}

static SLOTS: PgAtomic<WorkerSlots> = unsafe { PgAtomic::new(c"pg_attribution_worker_slots") };

/// Set in the postmaster when the library is preloaded, and inherited by every backend.
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static WAKE_ON_COMMIT: Cell<bool> = const { Cell::new(false) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Called from `_PG_init` while shared_preload_libraries is being processed.
pub fn init_shmem() {
    pg_shmem_init!(SLOTS);
    SHMEM_READY.store(true, Ordering::Relaxed);
}

/// Whether this backend can wake the workers (the library was preloaded).
pub fn available() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

/// A worker announces itself in its slot.
pub fn publish(slot: usize) {
    // SAFETY: MyProc is valid in a connected background worker.
    let procno = unsafe { (*pg_sys::MyProc).pgprocno };
    SLOTS.get().procnos[slot].store(procno + 1, Ordering::Release);
}

/// A worker leaves its slot on a clean exit.
pub fn withdraw(slot: usize) {
    SLOTS.get().procnos[slot].store(0, Ordering::Release);
}

/// Asks for the workers to be woken when the current transaction commits.
pub fn on_commit() {
    if !available() {
        return;
    }
    WAKE_ON_COMMIT.with(|w| w.set(true));
    CALLBACK_REGISTERED.with(|registered| {
        if !registered.get() {
            // SAFETY: registers a plain function for the life of the backend.
            unsafe { pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut()) };
            registered.set(true);
        }
    });
}

unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    let commit = event == pg_sys::XactEvent::XACT_EVENT_COMMIT;
    let abort = event == pg_sys::XactEvent::XACT_EVENT_ABORT;
    if !(commit || abort) {
        return;
    }
    let wake = WAKE_ON_COMMIT.with(|w| w.replace(false));
    if commit && wake {
        wake_all();
    }
}

fn wake_all() {
    let slots = SLOTS.get();
    for slot in &slots.procnos {
        let procno = slot.load(Ordering::Acquire);
        if procno > 0 {
            // SAFETY: ProcGlobal->allProcs is a fixed shared array and procno came from a
            // live PGPROC; SetLatch is safe to call on any process's latch.
            unsafe {
                let proc = (*pg_sys::ProcGlobal).allProcs.add((procno - 1) as usize);
                pg_sys::SetLatch(&raw mut (*proc).procLatch);
            }
        }
    }
}
