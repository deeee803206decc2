//! How a connection waits for SQLite's write lock held by another process (the CLI beside
//! the server, or the other way round).
//!
//! SQLite's own busy timeout sleeps with a backoff that grows to 100 ms a try, so a push
//! waiting behind a 5 ms transaction of `berth gc` could sleep 25 ms or more past the
//! moment the lock came free. This handler tries again every quarter millisecond until
//! the deadline. Within one process the single writer connection queues waiters in order and
//! this never runs.

use std::ffi::{c_int, c_void};
use std::time::Duration;

use sqlx::sqlite::SqliteConnection;

/// How long a statement waits for the lock before it fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const TRY_EVERY: Duration = Duration::from_micros(250);

extern "C" fn wait_for_lock(_: *mut c_void, tries: c_int) -> c_int {
    // `tries` counts the calls for this one wait; each sleeps TRY_EVERY (or a little more,
    // so the deadline is at least BUSY_TIMEOUT).
    if tries as u128 * TRY_EVERY.as_micros() >= BUSY_TIMEOUT.as_micros() {
        return 0;
    }
    std::thread::sleep(TRY_EVERY);
    1
}

/// Installs the handler on a freshly opened connection (sqlx runs each SQLite connection
/// on its own worker thread, so the handler's sleep blocks no async task).
pub async fn install(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is this connection's open handle, held locked for the call; the
    // callback is a plain function that keeps no pointer.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(db, Some(wait_for_lock), std::ptr::null_mut())
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!(
            "sqlite3_busy_handler returned {rc}"
        )));
    }
    Ok(())
}
