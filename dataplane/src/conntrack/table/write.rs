//! The writing side of the flow table: the insert claim protocol, entry
//! allocation (free list), eviction, and freeing after unlink. See the
//! parent module's doc for the discipline these functions implement.

use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use super::{
    index_hash, key_from_words, load5, same, slot_dir, slot_id, slot_val, tag8, tick, Claim, Dir,
    Hit, InsertError, Look, Table, Word, BUCKET, COMMITTED, CTRL, EVICT_SCAN, OVF_ONE, SLOTS,
    SPIN_LIMIT, TAG_MASK,
};
use crate::conntrack::key::FlowKey;
use crate::conntrack::state::{CtState, DYING, FREE, INSERTING, LIVE};

/// What [`Table::rival`] found in a slot with the inserted key's tag.
enum Rival {
    None,
    Removed,
    Owner(u32),
    Wait(u64),
}

impl Table {
    /// Inserts a new flow: `orig` as seen, `reply` the tuple its replies will
    /// carry (`swap` of the translated orig). If `orig` is already present
    /// (another worker won the race) returns that entry's hit, counted in
    /// `races`, so both packets go through with one entry.
    pub fn insert(
        &self,
        orig: &FlowKey,
        reply: &FlowKey,
        user: u32,
        tcp_flags: u8,
        now: u64,
    ) -> Result<Hit, InsertError> {
        let mut mine: Option<u32> = None;
        let mut spins = 0u32;
        while spins < SPIN_LIMIT {
            match self.look(orig, now) {
                Look::Live(id, dir, snap) => {
                    if let Some(m) = mine {
                        self.free(m);
                    }
                    self.hdr.counters.races.fetch_add(1, Relaxed);
                    return Ok(self.touch(id, dir, &snap, tcp_flags, now));
                }
                Look::Busy => {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                Look::Expired(id) => {
                    if self.kill(id, Some(now)) {
                        self.hdr.counters.evicted_expired.fetch_add(1, Relaxed);
                    }
                    spins += 1;
                    continue;
                }
                Look::Miss => {}
            }
            let id = match mine {
                Some(id) => id,
                None => {
                    let id = self.alloc(now).ok_or_else(|| {
                        self.hdr.counters.refused_full.fetch_add(1, Relaxed);
                        InsertError::Full
                    })?;
                    self.init(id, orig, reply, user, tcp_flags, now);
                    mine = Some(id);
                    id
                }
            };
            match self.claim(orig, id, Dir::Orig) {
                Claim::Won => {}
                Claim::Lost(_) => {
                    spins += 1;
                    continue;
                }
                Claim::Full => {
                    self.free(id);
                    self.hdr.counters.refused_full.fetch_add(1, Relaxed);
                    return Err(InsertError::Full);
                }
            }
            if reply != orig {
                if let Err(e) = self.claim_reply(reply, id, now) {
                    self.unlink(orig, id, Dir::Orig);
                    self.free(id);
                    match e {
                        InsertError::Full => self.hdr.counters.refused_full.fetch_add(1, Relaxed),
                        InsertError::ReplyTaken => {
                            self.hdr.counters.reply_taken.fetch_add(1, Relaxed)
                        }
                    };
                    return Err(e);
                }
            }
            let e = &self.entries[id as usize];
            let w = Word(e.state.load(Relaxed)).with_life(LIVE);
            e.state.store(w.0, Release);
            self.hdr.counters.live.fetch_add(1, Relaxed);
            self.hdr.counters.inserted.fetch_add(1, Relaxed);
            return Ok(Hit {
                id,
                dir: Dir::Orig,
                xlate: reply.swap(),
                nat: reply.swap() != *orig,
                user,
            });
        }
        if let Some(m) = mine {
            self.free(m);
        }
        self.hdr.sweep.contended.fetch_add(1, Relaxed);
        self.hdr.counters.refused_full.fetch_add(1, Relaxed);
        Err(InsertError::Full)
    }

    /// Frees expired flows among the next `budget` entries of the sweep
    /// cursor; returns how many it freed.
    pub fn reclaim(&self, now: u64, budget: usize) -> usize {
        let cap = self.geo.capacity;
        let budget = budget.min(cap as usize) as u32;
        let mut id = self.hdr.sweep.reclaim_cursor.fetch_add(budget, Relaxed) % cap;
        let mut freed = 0;
        for _ in 0..budget {
            // A look without the call first: most swept entries are free or
            // not expired (`kill` checks again before its CAS). Every
            // packet batch pays this sweep.
            if let Some(e) = self.entries.get(id as usize) {
                let w = Word(e.state.load(Relaxed));
                if w.life() == LIVE
                    && tick(now).wrapping_sub(e.last.load(Relaxed)) as i32 > self.timeout(w)
                    && self.kill(id, Some(now))
                {
                    freed += 1;
                }
            }
            id += 1;
            if id == cap {
                id = 0;
            }
        }
        if freed > 0 {
            self.hdr.counters.reclaimed.fetch_add(freed as u64, Relaxed);
        }
        freed
    }

    /// Removes flow `id` if live (no-op otherwise).
    pub fn remove(&self, id: u32) {
        if id < self.geo.capacity && self.kill(id, None) {
            self.hdr.sweep.removed.fetch_add(1, Relaxed);
        }
    }

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
        for (a, w) in e.tuple[0].iter().zip(orig.words()) {
            a.store(w, Relaxed);
        }
        for (a, w) in e.tuple[1].iter().zip(reply.words()) {
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
    /// Each raised the overflow counts up to its slot (R), published pending
    /// (P) before its scan (S) and committed (C) after, all SeqCst. Y
    /// committed, so S_Y did not see X's slot pending or committed (either
    /// would make Y lose): S_Y read X's slot, or a zero count on the way to
    /// it, before R_X < P_X. Hence R_Y < P_Y < S_Y < P_X < S_X, so S_X found
    /// the counts up to Y's slot raised, reached it and saw it pending (then
    /// X's CAS removed it, and C_Y failed) or committed (then X lost).
    /// Either way one of them did not commit.
    pub(super) fn claim(&self, key: &FlowKey, id: u32, dir: Dir) -> Claim {
        let kw = key.words();
        let h = index_hash(&kw);
        let (home, tag) = self.home(h);
        let mine = slot_val(tag, id, dir);
        let probe = self.geo.probe as usize;
        let mut spins = 0u32;
        'retry: while spins < SPIN_LIMIT {
            spins += 1;
            // 1. Publish pending in the first empty slot, the overflow counts
            // on the way to it raised first.
            let mut pos = None;
            'find: for d in 0..probe {
                let b = self.bucket_at(home, d);
                for (i, slot) in self.index[b].0[..SLOTS].iter().enumerate() {
                    if slot.load(Relaxed) == 0 {
                        self.reserve(home, d);
                        if slot.compare_exchange(0, mine, SeqCst, Relaxed).is_ok() {
                            pos = Some((b * BUCKET + i, d));
                            break 'find;
                        }
                        self.release(home, d);
                    }
                }
            }
            let Some((pos, disp)) = pos else {
                return Claim::Full;
            };
            // 2. Scan for equal keys elsewhere, up to a zero overflow count:
            // one pass over a bucket marks the slots with our tag (usually
            // none but our own), and only those are looked at.
            for d in 0..probe {
                let b = self.bucket_at(home, d);
                let bucket = &self.index[b];
                let mut m = 0u32;
                for (i, slot) in bucket.0[..SLOTS].iter().enumerate() {
                    m |= u32::from(slot.load(SeqCst) & TAG_MASK == tag) << i;
                }
                if pos / BUCKET == b {
                    m &= !(1 << (pos % BUCKET));
                }
                while m != 0 {
                    let slot = &bucket.0[m.trailing_zeros() as usize & 7];
                    m &= m - 1;
                    match self.rival(slot, &kw, tag, id) {
                        Rival::None => {}
                        Rival::Removed => self.release(home, d),
                        Rival::Owner(other) => {
                            self.withdraw(pos, mine, home, disp);
                            return Claim::Lost(other);
                        }
                        Rival::Wait(v) => {
                            // Step aside and wait until the slot changes,
                            // then start over.
                            self.withdraw(pos, mine, home, disp);
                            while slot.load(Acquire) == v && spins < SPIN_LIMIT {
                                spins += 1;
                                std::hint::spin_loop();
                            }
                            continue 'retry;
                        }
                    }
                }
                if bucket.0[CTRL].load(SeqCst) < OVF_ONE {
                    break;
                }
            }
            // 3. Commit (fails if a lower id removed our pending slot), then
            // show the slot to `track` by its tag byte.
            if self
                .slot(pos)
                .compare_exchange(mine, mine | COMMITTED, SeqCst, Relaxed)
                .is_ok()
            {
                let ctrl = pos / BUCKET * BUCKET + CTRL;
                self.slot(ctrl)
                    .fetch_or(tag8(h) << (8 * (pos % BUCKET)), SeqCst);
                return Claim::Won;
            }
        }
        self.hdr.sweep.contended.fetch_add(1, Relaxed);
        Claim::Full
    }

    /// Settles an inserter of key `kw` (entry `id`) with `slot`, which
    /// carries the key's tag: no rival (another key, or gone); a pending
    /// rival with a higher id, removed now (the caller lowers its counts:
    /// same key, same home); a committed live owner, which wins; or a slot
    /// to wait out (a lower pending id wins, a dying owner is unlinking).
    #[cold]
    #[inline(never)]
    fn rival(&self, slot: &AtomicU64, kw: &[u64; 5], tag: u64, id: u32) -> Rival {
        let mut v = slot.load(SeqCst);
        loop {
            if v & TAG_MASK != tag || v == 0 {
                return Rival::None;
            }
            let other = slot_id(v);
            let Some(snap) = self.read(other) else {
                return Rival::None;
            };
            let k = if slot_dir(v) == Dir::Orig {
                &snap.orig
            } else {
                &snap.reply
            };
            if !same(k, kw) || snap.word.life() == FREE {
                return Rival::None;
            }
            let dying = snap.word.life() == DYING;
            if v & COMMITTED != 0 && !dying {
                return Rival::Owner(other);
            }
            if dying || other < id {
                return Rival::Wait(v);
            }
            match slot.compare_exchange(v, 0, SeqCst, SeqCst) {
                Ok(_) => return Rival::Removed,
                Err(now_v) => v = now_v,
            }
        }
    }

    /// Raises the overflow counts of the `disp` buckets from `home` on (a
    /// slot is about to be published `disp` buckets past its home).
    #[inline]
    fn reserve(&self, home: usize, disp: usize) {
        for d in 0..disp {
            let ctrl = self.bucket_at(home, d) * BUCKET + CTRL;
            self.slot(ctrl).fetch_add(OVF_ONE, SeqCst);
        }
    }

    /// Lowers what [`Table::reserve`] raised, once the slot is cleared.
    #[inline]
    fn release(&self, home: usize, disp: usize) {
        for d in 0..disp {
            let ctrl = self.bucket_at(home, d) * BUCKET + CTRL;
            self.slot(ctrl).fetch_sub(OVF_ONE, SeqCst);
        }
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

    /// Takes back our pending slot `pos` (unless a lower id removed it,
    /// which then lowered its counts).
    #[inline]
    pub(super) fn withdraw(&self, pos: usize, mine: u64, home: usize, disp: usize) {
        if self
            .slot(pos)
            .compare_exchange(mine, 0, SeqCst, Relaxed)
            .is_ok()
        {
            self.release(home, disp);
        }
    }

    /// Removes the committed slot of (`id`, `dir`) for `key`: its tag byte
    /// first, then the slot, then the overflow counts on the way to it. Only
    /// the slot's owner (the inserter, or whoever claimed the entry `DYING`)
    /// calls this, so the slot cannot change under it.
    pub(super) fn unlink(&self, key: &FlowKey, id: u32, dir: Dir) {
        let (home, tag) = self.home(index_hash(&key.words()));
        let v = slot_val(tag, id, dir) | COMMITTED;
        for d in 0..self.geo.probe as usize {
            let base = self.bucket_at(home, d) * BUCKET;
            for s in base..base + SLOTS {
                if self.slot(s).load(Relaxed) != v {
                    continue;
                }
                let byte = 0xffu64 << (8 * (s - base));
                self.slot(base + CTRL).fetch_and(!byte, SeqCst);
                if self.slot(s).compare_exchange(v, 0, SeqCst, Relaxed).is_ok() {
                    self.release(home, d);
                    return;
                }
            }
            if self.slot(base + CTRL).load(SeqCst) < OVF_ONE {
                return;
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
        let orig = key_from_words(&load5(&e.tuple[0]));
        let reply = key_from_words(&load5(&e.tuple[1]));
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
        let cap = self.geo.capacity;
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
