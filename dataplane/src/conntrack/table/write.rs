//! The writing side of the flow table: the insert claim protocol, entry
//! allocation (free list), eviction, and freeing after unlink. See the
//! parent module's doc for the discipline these functions implement.

use std::sync::atomic::{fence, Ordering::*};

use super::{
    key_from_words, load5, same, slot_dir, slot_id, slot_val, tick, Claim, Dir, InsertError, Table,
    Word, BUCKET, COMMITTED, EVICT_SCAN, SPIN_LIMIT, TAG_MASK,
};
use crate::conntrack::key::FlowKey;
use crate::conntrack::state::{CtState, DYING, FREE, INSERTING, LIVE};

impl Table {
    pub(super) fn init(
        &self,
        id: u32,
        orig: &FlowKey,
        reply: &FlowKey,
        user: u32,
        flags: u8,
        now: u64,
    ) {
        let e = &self.entries[id as usize];
        let s = e.seq.load(Relaxed);
        e.seq.store(s.wrapping_add(1), Relaxed);
        fence(Release);
        for (a, w) in e.orig.iter().zip(orig.words()) {
            a.store(w, Relaxed);
        }
        for (a, w) in e.reply.iter().zip(reply.words()) {
            a.store(w, Relaxed);
        }
        e.user.store(user, Relaxed);
        let st = CtState::initial(orig.proto, flags);
        let nat = *reply != orig.swap();
        e.state
            .store(Word::new(INSERTING, st).with_nat(nat).0, Relaxed);
        e.last.store(tick(now), Relaxed);
        e.seq.store(s.wrapping_add(2), Release);
    }

    /// Publishes and commits the index slot for `key` -> (`id`, `dir`), or
    /// finds the committed entry that holds an equal key.
    ///
    /// Why no duplicates: say X (id x) and Y (id y > x) both commit key K.
    /// Each published pending (P) before its scan (S) and committed (C) after,
    /// all SeqCst. Y committed, so S_Y did not see X's slot pending or
    /// committed (either would make Y lose): S_Y < P_X. Hence P_Y < S_Y < P_X
    /// < S_X, so S_X saw Y's slot pending (then X's CAS removed it, and C_Y
    /// failed) or committed (then X lost). Either way one of them did not
    /// commit.
    pub(super) fn claim(&self, key: &FlowKey, id: u32, dir: Dir) -> Claim {
        let kw = key.words();
        let (home, tag) = self.home(key.hash());
        let mine = slot_val(tag, id, dir);
        let probe = self.hdr.geo.probe as usize;
        let mut spins = 0u32;
        'retry: while spins < SPIN_LIMIT {
            spins += 1;
            // 1. Publish pending in the first empty slot.
            let mut pos = None;
            'find: for d in 0..probe {
                let base = self.bucket_at(home, d) * BUCKET;
                for s in base..base + BUCKET {
                    if self.slot(s).load(Relaxed) == 0 {
                        // Raise the scan span before publishing beyond it
                        // (a SeqCst load that sees it raised is enough).
                        if self.hdr.geo.max_disp.load(SeqCst) < d as u32 {
                            self.hdr.geo.max_disp.fetch_max(d as u32, SeqCst);
                        }
                        if self
                            .slot(s)
                            .compare_exchange(0, mine, SeqCst, Relaxed)
                            .is_ok()
                        {
                            pos = Some(s);
                            break 'find;
                        }
                    }
                }
            }
            let Some(pos) = pos else { return Claim::Full };
            // 2. Scan for equal keys elsewhere.
            let span = self.span();
            for d in 0..span {
                let base = self.bucket_at(home, d) * BUCKET;
                for s in base..base + BUCKET {
                    if s == pos {
                        continue;
                    }
                    let mut v = self.slot(s).load(SeqCst);
                    loop {
                        if v == 0 || v & TAG_MASK != tag {
                            break;
                        }
                        let other = slot_id(v);
                        let Some(snap) = self.read(other) else { break };
                        let k = if slot_dir(v) == Dir::Orig {
                            &snap.orig
                        } else {
                            &snap.reply
                        };
                        if !same(k, &kw) || snap.word.life() == FREE {
                            break;
                        }
                        let dying = snap.word.life() == DYING;
                        if v & COMMITTED != 0 && !dying {
                            self.withdraw(pos, mine);
                            return Claim::Lost(other);
                        }
                        if dying || other < id {
                            // A dying entry is about to unlink the slot; a
                            // lower pending id wins: step aside and wait until
                            // the slot changes, then look again.
                            self.withdraw(pos, mine);
                            while self.slot(s).load(Acquire) == v && spins < SPIN_LIMIT {
                                spins += 1;
                                std::hint::spin_loop();
                            }
                            continue 'retry;
                        }
                        match self.slot(s).compare_exchange(v, 0, SeqCst, SeqCst) {
                            Ok(_) => break,
                            Err(now_v) => v = now_v,
                        }
                    }
                }
            }
            // 3. Commit (fails if a lower id removed our pending slot).
            if self
                .slot(pos)
                .compare_exchange(mine, mine | COMMITTED, SeqCst, Relaxed)
                .is_ok()
            {
                return Claim::Won;
            }
        }
        self.hdr.sweep.contended.fetch_add(1, Relaxed);
        Claim::Full
    }

    pub(super) fn claim_reply(
        &self,
        reply: &FlowKey,
        id: u32,
        now: u64,
    ) -> Result<(), InsertError> {
        for _ in 0..4 {
            match self.claim(reply, id, Dir::Reply) {
                Claim::Won => return Ok(()),
                Claim::Full => return Err(InsertError::Full),
                Claim::Lost(other) => {
                    // A flow whose time is up does not hold its tuple.
                    let stale = self
                        .read(other)
                        .is_some_and(|s| s.word.life() == LIVE && self.expired(other, s.word, now));
                    if !(stale && self.kill(other, Some(now))) {
                        return Err(InsertError::ReplyTaken);
                    }
                    self.hdr.counters.evicted_expired.fetch_add(1, Relaxed);
                }
            }
        }
        Err(InsertError::ReplyTaken)
    }

    #[inline]
    pub(super) fn withdraw(&self, pos: usize, mine: u64) {
        let _ = self.slot(pos).compare_exchange(mine, 0, SeqCst, Relaxed);
    }

    /// Removes the committed slot of (`id`, `dir`) for `key`.
    pub(super) fn unlink(&self, key: &FlowKey, id: u32, dir: Dir) {
        let (home, tag) = self.home(key.hash());
        let v = slot_val(tag, id, dir) | COMMITTED;
        for d in 0..self.span() {
            let base = self.bucket_at(home, d) * BUCKET;
            for s in base..base + BUCKET {
                if self.slot(s).compare_exchange(v, 0, SeqCst, Relaxed).is_ok() {
                    return;
                }
            }
        }
    }

    // ---- entries: allocation, eviction, freeing ----

    pub(super) fn alloc(&self, now: u64) -> Option<u32> {
        for _ in 0..4 {
            if let Some(id) = self.pop() {
                return Some(id);
            }
            if !self.evict(now) {
                return None;
            }
        }
        self.pop()
    }

    pub(super) fn pop(&self) -> Option<u32> {
        let mut head = self.hdr.free.0.load(Acquire);
        loop {
            let idp1 = head as u32;
            if idp1 == 0 {
                return None;
            }
            let id = idp1 - 1;
            let next = self.entries[id as usize].user.load(Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self
                .hdr
                .free
                .0
                .compare_exchange_weak(head, new, AcqRel, Acquire)
            {
                Ok(_) => return Some(id),
                Err(h) => head = h,
            }
        }
    }

    pub(super) fn push(&self, id: u32) {
        let e = &self.entries[id as usize];
        let mut head = self.hdr.free.0.load(Relaxed);
        loop {
            e.user.store(head as u32, Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(id + 1);
            match self
                .hdr
                .free
                .0
                .compare_exchange_weak(head, new, Release, Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Frees an entry whose slots are unlinked (or never committed): bumps
    /// the version so readers holding the id see the change.
    pub(super) fn free(&self, id: u32) {
        let e = &self.entries[id as usize];
        let s = e.seq.load(Relaxed);
        e.seq.store(s.wrapping_add(1), Relaxed);
        fence(Release);
        e.state.store(FREE, Relaxed);
        e.seq.store(s.wrapping_add(2), Release);
        self.push(id);
    }

    /// Claims a live entry (only if expired at `now`, when given), unlinks
    /// its slots and frees it. Returns whether this call freed it.
    pub(super) fn kill(&self, id: u32, expired_at: Option<u64>) -> bool {
        let e = &self.entries[id as usize];
        let mut cur = Word(e.state.load(Acquire));
        loop {
            if cur.life() != LIVE {
                return false;
            }
            if let Some(now) = expired_at {
                if !self.expired(id, cur, now) {
                    return false;
                }
            }
            match e
                .state
                .compare_exchange(cur.0, cur.with_life(DYING).0, AcqRel, Acquire)
            {
                Ok(_) => break,
                Err(x) => cur = Word(x),
            }
        }
        // DYING is exclusive: nobody rewrites the tuples until we free it.
        let orig = key_from_words(&load5(&e.orig));
        let reply = key_from_words(&load5(&e.reply));
        self.unlink(&orig, id, Dir::Orig);
        if reply != orig {
            self.unlink(&reply, id, Dir::Reply);
        }
        self.free(id);
        self.hdr.counters.live.fetch_sub(1, Relaxed);
        true
    }

    /// Makes room on a full table: an expired entry first, else an unassured
    /// one, among the next [`EVICT_SCAN`] entries. Returns whether it freed one.
    pub(super) fn evict(&self, now: u64) -> bool {
        let cap = self.hdr.geo.capacity;
        let n = (EVICT_SCAN as u32).min(cap);
        let start = self.hdr.sweep.evict_cursor.fetch_add(n, Relaxed) % cap;
        let mut unassured = None;
        for i in 0..n {
            let id = (start + i) % cap;
            let w = Word(self.entries[id as usize].state.load(Relaxed));
            if w.life() != LIVE {
                continue;
            }
            if self.expired(id, w, now) {
                if self.kill(id, Some(now)) {
                    self.hdr.counters.evicted_expired.fetch_add(1, Relaxed);
                    return true;
                }
            } else if unassured.is_none() && !w.assured() {
                unassured = Some(id);
            }
        }
        if let Some(id) = unassured {
            let w = Word(self.entries[id as usize].state.load(Relaxed));
            if !w.assured() && self.kill(id, None) {
                self.hdr.counters.evicted_unassured.fetch_add(1, Relaxed);
                return true;
            }
        }
        false
    }
}
