//! Wake-on-commit. Each running worker publishes its PGPROC number in a small table in
//! shared memory, with a flag saying whether it is idle; a transaction that enqueued a
//! job sets the latches of as many idle workers as it enqueued jobs when it commits, so
//! a worker starts on the job within a millisecond instead of at its next poll. Busy
//! workers need no wake-up: they look for the next job as soon as they finish one.
//!
//! It sits below both sides: the queue (which asks for a wake-up) and the workers (which
//! publish their slots) depend on it, never on each other.
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
    /// Whether the worker in each slot is about to sleep or sleeping.
    idle: [AtomicBool; MAX_WORKERS],
}

unsafe impl PGRXSharedMemory for WorkerSlots {}

static SLOTS: PgAtomic<WorkerSlots> = unsafe { PgAtomic::new(c"pg_attribution_worker_slots") };

/// Set in the postmaster when the library is preloaded, and inherited by every backend.
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Jobs enqueued by the current transaction: how many idle workers to wake.
    static WAKE_ON_COMMIT: Cell<usize> = const { Cell::new(0) };
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

/// A worker announces itself in its slot, busy.
pub fn publish(slot: usize) {
    // SAFETY: MyProc is valid in a connected background worker.
    let procno = unsafe { (*pg_sys::MyProc).pgprocno };
    SLOTS.get().idle[slot].store(false, Ordering::SeqCst);
    SLOTS.get().procnos[slot].store(procno + 1, Ordering::SeqCst);
}

/// A worker says it is about to sleep. It must look at the queue once more after
/// this: a commit that happened before it saw the worker busy and woke nobody.
pub fn set_idle(slot: usize, idle: bool) {
    SLOTS.get().idle[slot].store(idle, Ordering::SeqCst);
}

/// A worker leaves its slot on a clean exit.
pub fn withdraw(slot: usize) {
    SLOTS.get().procnos[slot].store(0, Ordering::SeqCst);
}

/// Asks for up to `jobs` idle workers to be woken when the current transaction commits.
pub fn on_commit(jobs: usize) {
    if !available() {
        return;
    }
    WAKE_ON_COMMIT.with(|w| w.set(w.get().saturating_add(jobs)));
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
    let jobs = WAKE_ON_COMMIT.with(|w| w.replace(0));
    if commit && jobs > 0 {
        wake_idle(jobs);
    }
}

/// Wakes up to `count` idle workers now (a hot window's run asks one to help).
pub fn wake_idle_now(count: usize) {
    if available() {
        wake_idle(count);
    }
}

/// Wakes up to `count` idle workers and marks them busy, so that the next commit wakes
/// others.
fn wake_idle(mut count: usize) {
    let slots = SLOTS.get();
    for (procno, idle) in slots.procnos.iter().zip(&slots.idle) {
        if count == 0 {
            return;
        }
        let procno = procno.load(Ordering::SeqCst);
        if procno > 0 && idle.swap(false, Ordering::SeqCst) {
            // SAFETY: ProcGlobal->allProcs is a fixed shared array and procno came from a
            // live PGPROC; SetLatch is safe to call on any process's latch.
            unsafe {
                let proc = (*pg_sys::ProcGlobal).allProcs.add((procno - 1) as usize);
                pg_sys::SetLatch(&raw mut (*proc).procLatch);
            }
            count -= 1;
        }
    }
}
