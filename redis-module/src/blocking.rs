//! Running a command's heavy part off Redis' main thread: the client is
//! blocked ([`Blocked`]), a worker thread does the work, then finishes under
//! the GIL through a thread-safe context bound to the blocked client (its
//! replies go to that client, its selected database is the client's), and
//! the client is unblocked. Command arguments the worker reads are kept alive
//! past the command with [`Retained`].
//!
//! The `redis-module` crate's `ThreadSafeContext::lock` hands out a context
//! detached from the client (database 0), so this file uses the raw API.

use std::os::raw::c_char;
use std::ptr;

use redis_module::{raw, Context};

/// A blocked client and a thread-safe context bound to it. Dropping it frees
/// the context (attaching any replies) and unblocks the client; one dropped
/// before [`Blocked::replied`] was called (a worker that panicked) first
/// replies with an error, so that the client is never left waiting for a
/// reply that will not come.
#[derive(Debug)]
pub struct Blocked {
    client: *mut raw::RedisModuleBlockedClient,
    ctx: *mut raw::RedisModuleCtx,
    replied: std::cell::Cell<bool>,
}

// SAFETY: a blocked client and its thread-safe context are made by Redis to be
// used from another thread; everything that needs the GIL happens in
// `with_lock`, and replies to a blocked client's context need no lock.
unsafe impl Send for Blocked {}

impl Blocked {
    /// Blocks the client of the running command. None when the server's API
    /// lacks a function or refuses (the caller then runs synchronously).
    pub fn new(ctx: &Context) -> Option<Self> {
        // SAFETY: called from a command callback with its live context; the
        // functions are those Redis exported to the module at load.
        unsafe {
            let block = raw::RedisModule_BlockClient?;
            let thread_safe = raw::RedisModule_GetThreadSafeContext?;
            let client = block(ctx.ctx, None, None, None, 0);
            if client.is_null() {
                return None;
            }
            let bound = thread_safe(client);
            if bound.is_null() {
                if let Some(unblock) = raw::RedisModule_UnblockClient {
                    unblock(client, ptr::null_mut());
                }
                return None;
            }
            Some(Self { client, ctx: bound, replied: std::cell::Cell::new(false) })
        }
    }

    /// Records that the command's reply was written to this context.
    pub fn replied(&self) {
        self.replied.set(true);
    }

    /// Unblocks the client without a reply from this context: the command
    /// replies itself, as it runs on (used when the work could not be
    /// handed to a worker).
    pub fn unblock_without_reply(self) {
        self.replied();
    }

    /// Runs `body` with the GIL held, given the context bound to the client.
    pub fn with_lock<T>(&self, body: impl FnOnce(&Context) -> T) -> T {
        // SAFETY: `ctx` is this blocked client's thread-safe context, alive
        // until drop; lock and unlock pair up around `body`.
        unsafe {
            if let Some(lock) = raw::RedisModule_ThreadSafeContextLock {
                lock(self.ctx);
            }
        }
        // Unlocks when dropped, so a panic in `body` cannot leave Redis
        // locked forever.
        let _unlock = Unlock(self.ctx);
        let context = Context::new(self.ctx);
        body(&context)
    }
}

/// Releases the GIL a [`Blocked::with_lock`] took.
struct Unlock(*mut raw::RedisModuleCtx);

impl Drop for Unlock {
    fn drop(&mut self) {
        // SAFETY: the context `with_lock` locked, alive for its call; this
        // is the one unlock that pairs with that lock.
        unsafe {
            if let Some(unlock) = raw::RedisModule_ThreadSafeContextUnlock {
                unlock(self.0);
            }
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: both pointers came from Redis in `new` and are released once;
        // a reply to a blocked client's thread-safe context needs no lock.
        unsafe {
            if !self.replied.get() {
                if let Some(reply) = raw::RedisModule_ReplyWithError {
                    reply(self.ctx, c"ERR internal error in a bandit command, see the server log".as_ptr());
                }
            }
            if let Some(free) = raw::RedisModule_FreeThreadSafeContext {
                free(self.ctx);
            }
            if let Some(unblock) = raw::RedisModule_UnblockClient {
                unblock(self.client, ptr::null_mut());
            }
        }
    }
}

/// A Redis string kept alive past the command that received it (or created
/// by the worker), readable from any thread while it lives. It must be
/// released under the GIL ([`Retained::release`]); one that is dropped
/// otherwise leaks rather than touch Redis' reference count without the lock.
#[derive(Debug)]
pub struct Retained {
    string: *mut raw::RedisModuleString,
}

// SAFETY: the string is never changed while retained (Redis does not modify
// command arguments, and created strings are only read); its reference count
// is only touched under the GIL (creation on the main thread or a plain
// allocation, release in `release`).
unsafe impl Send for Retained {}
// SAFETY: as above; shared access only reads the bytes.
unsafe impl Sync for Retained {}

impl Retained {
    /// Keeps a command argument alive past the command.
    ///
    /// # Safety
    /// `ctx` must be the running command's context and `arg` one of its
    /// arguments.
    pub unsafe fn keep(ctx: &Context, arg: *mut raw::RedisModuleString) -> Option<Self> {
        let retain = unsafe { raw::RedisModule_RetainString }?;
        // SAFETY: per the caller's promise.
        unsafe { retain(ctx.ctx, arg) };
        Some(Self { string: arg })
    }

    /// A new string holding a copy of `bytes`, outside any context (its
    /// only cost is an allocation, so any thread may create it).
    pub fn copy_of(bytes: &[u8]) -> Option<Self> {
        let create = unsafe { raw::RedisModule_CreateString }?;
        // SAFETY: a NULL context makes an unmanaged string; the pointer and
        // length describe `bytes`.
        let string = unsafe { create(ptr::null_mut(), bytes.as_ptr().cast::<c_char>(), bytes.len()) };
        (!string.is_null()).then_some(Self { string })
    }

    pub fn as_ptr(&self) -> *mut raw::RedisModuleString {
        self.string
    }

    /// The string's bytes.
    pub fn bytes(&self) -> &[u8] {
        let mut len = 0;
        let data = raw::string_ptr_len(self.string, &mut len);
        if data.is_null() {
            return &[];
        }
        // SAFETY: Redis guarantees `data` points at `len` bytes while the
        // string lives, and it lives as long as `self`.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
    }

    /// Releases the string; `_locked` proves the GIL is held.
    pub fn release(self, _locked: &Context) {
        // SAFETY: the string was retained or created for `self`, released once.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeString {
                free(ptr::null_mut(), self.string);
            }
        }
    }
}
