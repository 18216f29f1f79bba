//! Claims and leases: what one router may hold against the others.
//!
//! Owns: bot instance keys (`bot_slots`: a bot first seen is recorded once, whoever polls it
//! first), template names (unique across the cluster, claimed on the version read), leases
//! with their expiry checked in the query, and seats (`seats`: a create in flight holds one,
//! so creates on several routers never put a node over its capacity). Does not own: what a router does with a
//! claim it lost or a lease it holds (`cluster`).

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;

use super::docs::{decode, int, is_tombstone, slot_key};
use super::errors::is_duplicate;
use super::{Coll, MongoStore, BOT_SLOTS, LEASES, SEATS};
use crate::store::{BotRecord, Claim, Op, Store, StoreError, TemplateRecord};

impl MongoStore {
    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = bson::DateTime::now().timestamp_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let leases = self.coll(LEASES);
        // `_id` and the `$or` inside an explicit `$and`: MongoDB takes the `_id` for the upsert
        // either way, but nx-27017 ignores a top-level `_id` next to `$or` and would take over
        // any expired lease. The expiry is compared as milliseconds (`until_ms`), since
        // nx-27017 stores a date `$set` as a string; `until` (a date) only feeds the TTL
        // index that cleans up.
        let call = leases
            .find_one_and_update(
                doc! {"$and": [
                    {"_id": name},
                    {"$or": [{"holder": holder}, {"until_ms": {"$lt": now}}]},
                ]},
                doc! {"$set": {
                    "holder": holder,
                    "until_ms": until,
                    "until": bson::DateTime::from_millis(until),
                }},
            )
            .upsert(true)
            .return_document(ReturnDocument::After);
        match self.timed("take a lease", call).await? {
            Ok(Some(d)) => Ok(d.get_str("holder").ok() == Some(holder)),
            // nx-27017 answers "no document" where MongoDB answers duplicate key: the filter
            // missed a lease someone else holds, and the upsert could not insert its _id.
            Ok(None) => Ok(false),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(self.fail("take a lease", &e)),
        }
    }

    pub(super) async fn give_up_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.run(
            "release a lease",
            self.coll(LEASES)
                .delete_one(doc! {"_id": name, "holder": holder}),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn claim_bot_instance(
        &self,
        bot: &BotRecord,
    ) -> Result<Claim<BotRecord>, StoreError> {
        let key = slot_key(bot);
        let slots = self.coll(BOT_SLOTS);
        // A few rounds: the key can change hands between our insert and our read (its holder
        // released it); each round makes progress, so three are plenty.
        for _ in 0..3 {
            match self
                .timed("claim a bot", slots.insert_one(self.slot_doc(&key, bot)?))
                .await?
            {
                Ok(_) => {
                    self.apply(&[Op::PutBot(bot.clone())]).await?;
                    return Ok(Claim::Won);
                }
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(self.fail("claim a bot", &e)),
            }
            let Some(slot) = self
                .run(
                    "read a bot claim",
                    slots.find_one(doc! {"_id": key.as_str()}),
                )
                .await?
            else {
                continue;
            };
            let holder = int(&slot, "bot").unwrap_or(-1);
            if holder == i64::from(bot.id) {
                self.apply(&[Op::PutBot(bot.clone())]).await?;
                return Ok(Claim::Won);
            }
            let record = self
                .run(
                    "read a bot",
                    self.coll(Coll::Bots.name()).find_one(doc! {"_id": holder}),
                )
                .await?;
            match record {
                Some(d) if !is_tombstone(&d) => {
                    let rec: BotRecord = decode(&format!("bots {holder}"), d)?;
                    if slot_key(&rec) == key {
                        return Ok(Claim::Lost(rec));
                    }
                }
                Some(_) => {}
                None => {
                    // The winner is between its key and its record (or died there): its
                    // record as it claimed the key.
                    let rec = slot
                        .get_document("record")
                        .map_err(|e| StoreError::Corrupt {
                            what: format!("bot_slots {key}"),
                            reason: e.to_string(),
                        })?;
                    return Ok(Claim::Lost(decode(
                        &format!("bot_slots {key}"),
                        rec.clone(),
                    )?));
                }
            }
            // The holder was deleted, or moved to another slot, and its key is not given up
            // yet (the batch that did it is being retried): it names no bot in this slot.
            // Free it, still only if it names that holder, and claim again.
            self.run(
                "free a bot claim",
                slots.delete_one(doc! {"_id": key.as_str(), "bot": holder}),
            )
            .await?;
        }
        Err(StoreError::Io(format!(
            "the claim of bot instance {key} kept changing hands"
        )))
    }

    pub(super) async fn claim_template_name(
        &self,
        t: &TemplateRecord,
    ) -> Result<Claim<TemplateRecord>, StoreError> {
        let templates = self.coll(Coll::Templates.name());
        let what = format!("templates {}", t.name);
        for _ in 0..3 {
            let current = self
                .run(
                    "read a template",
                    templates.find_one(doc! {"_id": t.name.as_str()}),
                )
                .await?;
            if let Some(d) = &current {
                // A live record is the template, on whichever node: a claim never replaces
                // it (its settings and identity would be lost).
                if !is_tombstone(d) {
                    return Ok(Claim::Lost(decode(&what, d.clone())?));
                }
            }
            let rev = self.next_rev().await?;
            let doc = self.record_doc(Bson::String(t.name.clone()), t, rev)?;
            match current {
                Some(d) => {
                    // Deleted: replace the tombstone only as we read it, so a router that
                    // took the name meanwhile keeps it.
                    let seen = int(&d, "rev").unwrap_or(0);
                    let r = self
                        .run(
                            "claim a template",
                            templates.replace_one(doc! {"_id": t.name.as_str(), "rev": seen}, doc),
                        )
                        .await?;
                    if r.matched_count == 1 {
                        return Ok(Claim::Won);
                    }
                }
                None => match self
                    .timed("claim a template", templates.insert_one(doc))
                    .await?
                {
                    Ok(_) => return Ok(Claim::Won),
                    Err(e) if is_duplicate(&e) => {}
                    Err(e) => return Err(self.fail("claim a template", &e)),
                },
            }
        }
        Err(StoreError::Io(format!(
            "the claim of template {} kept changing hands",
            t.name
        )))
    }

    /// Keeps the `bot_slots` keys in step with the bots a batch wrote: a bot put takes the key
    /// of its slot if it is free and gives up any other key it holds; a deleted bot gives up
    /// its keys. Giving up is conditional on the key still naming that bot.
    pub(super) async fn sync_slots(
        &self,
        bots: &BTreeMap<u32, Option<&BotRecord>>,
    ) -> Result<(), StoreError> {
        let mut inserts = Vec::new();
        let mut deletes = Vec::new();
        let mut updates = Vec::new();
        for (id, rec) in bots {
            let id = i64::from(*id);
            match rec {
                Some(b) => {
                    let key = slot_key(b);
                    let slot = self.slot_doc(&key, b)?;
                    // A slot this bot already holds gets the record as now written, so the
                    // copy never keeps what the record no longer holds (a secret sealed with
                    // a rotated key, or still in plain text).
                    if let Ok(record) = slot.get_document("record") {
                        updates.push(doc! {
                            "q": {"_id": key.as_str(), "bot": id},
                            "u": {"$set": {"record": record.clone()}},
                        });
                    }
                    inserts.push(slot);
                    deletes.push(doc! {"q": {"bot": id, "_id": {"$ne": key}}, "limit": 0});
                }
                None => deletes.push(doc! {"q": {"bot": id}, "limit": 0}),
            }
        }
        // Keys given up first: a batch that deletes a duplicate and puts the bot that owns its
        // slot (the leader keeping its own record) must leave that key with the bot it puts.
        if !deletes.is_empty() {
            self.write_command("delete", "deletes", BOT_SLOTS, deletes, false)
                .await?;
        }
        if !inserts.is_empty() {
            // A key held by someone else stays theirs (duplicate key: skipped).
            self.write_command("insert", "documents", BOT_SLOTS, inserts, true)
                .await?;
        }
        if !updates.is_empty() {
            self.write_command("update", "updates", BOT_SLOTS, updates, false)
                .await?;
        }
        Ok(())
    }

    /// A seat on `node` for a create in flight: inserted first, then the node's recorded bots
    /// and live seats are counted (this one included), and the seat is given up again when
    /// they exceed `capacity`. Two racing creates for the last place both count each other,
    /// so the node never goes over (at worst both are refused and placed elsewhere).
    pub(super) async fn take_seat(
        &self,
        node: &str,
        capacity: u32,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let now = bson::DateTime::now().timestamp_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let id = bson::oid::ObjectId::new().to_hex();
        let seats = self.coll(SEATS);
        self.run(
            "take a seat",
            seats.insert_one(doc! {
                "_id": id.as_str(),
                "node": node,
                "until_ms": until,
                "until": bson::DateTime::from_millis(until),
                "by": self.router_id.as_str(),
            }),
        )
        .await?;
        let held = self
            .run(
                "count seats",
                seats.count_documents(doc! {"node": node, "until_ms": {"$gt": now}}),
            )
            .await?;
        // Tombstones keep no `node`, so this counts the bots recorded there now.
        let bots = self
            .run(
                "count bots",
                self.coll(Coll::Bots.name())
                    .count_documents(doc! {"node": node}),
            )
            .await?;
        if bots.saturating_add(held) > u64::from(capacity) {
            self.give_up_seat(&id).await?;
            return Ok(None);
        }
        Ok(Some(id))
    }

    pub(super) async fn give_up_seat(&self, seat: &str) -> Result<(), StoreError> {
        if seat.is_empty() {
            return Ok(());
        }
        self.run(
            "give up a seat",
            self.coll(SEATS).delete_one(doc! {"_id": seat}),
        )
        .await?;
        Ok(())
    }

    pub(super) fn slot_doc(&self, key: &str, b: &BotRecord) -> Result<Document, StoreError> {
        let record = bson::to_document(b)
            .map_err(|e| StoreError::Refused(format!("cannot encode a record as BSON: {e}")))?;
        Ok(doc! {
            "_id": key,
            "bot": i64::from(b.id),
            // The claimer's record, for a loser that reads the key before the winner's
            // record is written (or after the winner died in between).
            "record": record,
            "by": self.router_id.as_str(),
        })
    }
}
