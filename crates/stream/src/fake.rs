//! `FakeStreams`: an in-process, scripted DynamoDB stream with fault injection (feature `fake`).
//!
//! Shards hold records with globally increasing sequence numbers (so a child's are above its parent's).
//! Faults: expire the next N `GetRecords` iterators (or the K-th call), trim a shard before a sequence number,
//! throttle the next N calls of any operation, answer ResourceNotFound transiently, split a shard (close it, add two children), remove a shard,
//! report records left out of a page.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::api::StreamsApi;
use crate::error::StreamsError;
use crate::model::{
    AttributeValue, EventName, IteratorPosition, RecordsPage, SequenceNumber, Shard, ShardPage, StreamRecord,
};

#[derive(Debug)]
struct FakeShard {
    id: String,
    parent: Option<String>,
    base: u128,
    records: Vec<StreamRecord>,
    /// Records before this index are trimmed.
    trimmed: usize,
    closed: bool,
    removed: bool,
}

/// Call counters, for assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeCalls {
    /// DescribeStream calls (including throttled ones).
    pub describe_stream: u64,
    /// GetShardIterator calls.
    pub get_shard_iterator: u64,
    /// GetRecords calls.
    pub get_records: u64,
    /// Calls answered with a throttling error.
    pub throttled: u64,
    /// Calls answered with ExpiredIteratorException.
    pub expired: u64,
    /// Calls answered with TrimmedDataAccessException.
    pub trimmed: u64,
    /// Every GetShardIterator request, in order: (shard, position).
    pub iterator_requests: Vec<(String, IteratorPosition)>,
}

#[derive(Debug, Default)]
struct State {
    shards: Vec<FakeShard>,
    next_seq: u128,
    iterators: HashMap<String, (usize, usize)>,
    next_iterator: u64,
    throttle_next: u64,
    expire_next: u64,
    expire_at_call: Option<u64>,
    empty_next: u64,
    not_found_next: u64,
    left_out_next: Vec<String>,
    latest_stream_arn: Option<String>,
    page_size: usize,
    calls: FakeCalls,
}

/// A scripted stream implementing [`StreamsApi`].
#[derive(Debug)]
pub struct FakeStreams {
    state: Mutex<State>,
}

impl Default for FakeStreams {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeStreams {
    /// An empty stream (DescribeStream pages of 100 shards).
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                next_seq: 100_000_000_000_000_000_000,
                page_size: 100,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an open shard.
    pub fn add_shard(&self, id: &str, parent: Option<&str>) {
        let mut s = self.lock();
        let base = s.next_seq;
        s.shards.push(FakeShard {
            id: id.to_owned(),
            parent: parent.map(str::to_owned),
            base,
            records: Vec::new(),
            trimmed: 0,
            closed: false,
            removed: false,
        });
    }

    fn shard_mut<'a>(s: &'a mut State, id: &str) -> &'a mut FakeShard {
        s.shards
            .iter_mut()
            .find(|x| x.id == id)
            .unwrap_or_else(|| panic!("no fake shard {id}"))
    }

    /// Appends an INSERT for partition key `pk` (attribute `pk`, string) with a `v` attribute, created now.
    pub fn put(&self, shard: &str, pk: &str, v: u64) -> SequenceNumber {
        self.put_at(shard, pk, v, SystemTime::now())
    }

    /// Like [`FakeStreams::put`] with an explicit creation time.
    pub fn put_at(&self, shard: &str, pk: &str, v: u64, at: SystemTime) -> SequenceNumber {
        let keys = HashMap::from([("pk".to_owned(), AttributeValue::S(pk.to_owned()))]);
        let mut image = keys.clone();
        image.insert("v".to_owned(), AttributeValue::N(v.to_string()));
        self.push(shard, EventName::Insert, keys, Some(image), Some(64), at)
    }

    /// Appends an INSERT or MODIFY record with the caller's primary key attributes and NEW image, created now
    /// (e.g. an encrypted item, to drive a verifier). `size_bytes` is an estimate of the image's size.
    ///
    /// # Panics
    /// On [`EventName::Remove`] (a REMOVE has no new image), an unknown shard or a closed shard.
    pub fn put_image(
        &self,
        shard: &str,
        event_name: EventName,
        keys: HashMap<String, AttributeValue>,
        new_image: HashMap<String, AttributeValue>,
    ) -> SequenceNumber {
        assert_ne!(event_name, EventName::Remove, "a REMOVE record carries no new image");
        let size = new_image
            .iter()
            .map(|(k, v)| k.len() + approximate_size(v))
            .sum::<usize>();
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.push(shard, event_name, keys, Some(new_image), Some(size), SystemTime::now())
    }

    fn push(
        &self,
        shard: &str,
        event_name: EventName,
        keys: HashMap<String, AttributeValue>,
        new_image: Option<HashMap<String, AttributeValue>>,
        size_bytes: Option<i64>,
        at: SystemTime,
    ) -> SequenceNumber {
        let mut s = self.lock();
        s.next_seq += 1;
        let seq = SequenceNumber::new(s.next_seq.to_string());
        let record = StreamRecord {
            event_id: format!("ev-{}", s.next_seq),
            event_name,
            sequence_number: seq.clone(),
            approximate_creation_time: Some(at),
            keys,
            new_image,
            old_image: None,
            size_bytes,
        };
        let sh = Self::shard_mut(&mut s, shard);
        assert!(!sh.closed, "cannot write to closed shard {shard}");
        sh.records.push(record);
        seq
    }

    /// Closes a shard (no more writes; reads end with a `None` iterator).
    pub fn close_shard(&self, id: &str) {
        Self::shard_mut(&mut self.lock(), id).closed = true;
    }

    /// Closes `id` and adds two open children.
    pub fn split_shard(&self, id: &str, left: &str, right: &str) {
        self.close_shard(id);
        self.add_shard(left, Some(id));
        self.add_shard(right, Some(id));
    }

    /// Trims every record of `shard` with a sequence number below `seq` (as retention would).
    pub fn trim_before(&self, shard: &str, seq: &SequenceNumber) {
        let mut s = self.lock();
        let sh = Self::shard_mut(&mut s, shard);
        sh.trimmed = sh.records.iter().take_while(|r| r.sequence_number < *seq).count();
    }

    /// Removes a shard from the stream entirely (past retention).
    pub fn remove_shard(&self, id: &str) {
        Self::shard_mut(&mut self.lock(), id).removed = true;
    }

    /// The next `n` calls (any operation) answer a throttling error.
    pub fn throttle_next(&self, n: u64) {
        self.lock().throttle_next = n;
    }

    /// The next `n` GetRecords calls answer ExpiredIteratorException.
    pub fn expire_next_iterators(&self, n: u64) {
        self.lock().expire_next = n;
    }

    /// The next `n` GetRecords calls answer an empty page and an iterator at the same place, as DynamoDB Streams
    /// may before reaching a part of the shard that holds records.
    pub fn empty_next(&self, n: u64) {
        self.lock().empty_next = n;
    }

    /// The next `n` GetShardIterator or GetRecords calls answer ResourceNotFoundException although the shard
    /// exists (the service does so transiently, e.g. right after a shard was created).
    pub fn not_found_next(&self, n: u64) {
        self.lock().not_found_next = n;
    }

    /// The next page of records also reports `n` records it left out (as the service's records without a
    /// sequence number are).
    pub fn leave_out_in_next_page(&self, n: usize) {
        self.lock().left_out_next = vec!["record without a sequence number (injected)".to_owned(); n];
    }

    /// The `call`-th GetRecords call (1-based, counted from the stream's creation) answers ExpiredIteratorException.
    pub fn expire_at_get_records_call(&self, call: u64) {
        self.lock().expire_at_call = Some(call);
    }

    /// What `latest_stream_arn` answers from now on (default `None`: the table's streams are not known).
    pub fn set_latest_stream_arn(&self, arn: Option<&str>) {
        self.lock().latest_stream_arn = arn.map(str::to_owned);
    }

    /// Shards per DescribeStream page.
    pub fn set_describe_page_size(&self, n: usize) {
        self.lock().page_size = n.max(1);
    }

    /// Call counters so far.
    pub fn calls(&self) -> FakeCalls {
        self.lock().calls.clone()
    }

    /// Sequence numbers written to a shard (trimmed ones included).
    pub fn sequence_numbers(&self, shard: &str) -> Vec<SequenceNumber> {
        let mut s = self.lock();
        Self::shard_mut(&mut s, shard)
            .records
            .iter()
            .map(|r| r.sequence_number.clone())
            .collect()
    }

    fn throttled(s: &mut State) -> bool {
        if s.throttle_next > 0 {
            s.throttle_next -= 1;
            s.calls.throttled += 1;
            true
        } else {
            false
        }
    }

    fn transient_not_found(s: &mut State, what: &str) -> Option<StreamsError> {
        (s.not_found_next > 0).then(|| {
            s.not_found_next -= 1;
            StreamsError::ResourceNotFound(format!("{what} (transient)"))
        })
    }

    fn new_iterator(s: &mut State, shard: usize, pos: usize) -> String {
        s.next_iterator += 1;
        let it = format!("it-{}", s.next_iterator);
        s.iterators.insert(it.clone(), (shard, pos));
        it
    }
}

impl StreamsApi for FakeStreams {
    async fn describe_stream(
        &self,
        _arn: &str,
        exclusive_start_shard_id: Option<&str>,
    ) -> Result<ShardPage, StreamsError> {
        let mut s = self.lock();
        s.calls.describe_stream += 1;
        if Self::throttled(&mut s) {
            return Err(StreamsError::Throttled("LimitExceededException".into()));
        }
        let visible: Vec<&FakeShard> = s.shards.iter().filter(|x| !x.removed).collect();
        let start = match exclusive_start_shard_id {
            Some(id) => visible.iter().position(|x| x.id == id).map_or(0, |i| i + 1),
            None => 0,
        };
        let page: Vec<Shard> = visible
            .iter()
            .skip(start)
            .take(s.page_size)
            .map(|x| Shard {
                id: x.id.clone(),
                parent_id: x.parent.clone(),
                start: Some(SequenceNumber::new((x.base + 1).to_string())),
                end: x.closed.then(|| {
                    x.records
                        .last()
                        .map(|r| r.sequence_number.clone())
                        .unwrap_or_else(|| SequenceNumber::new(x.base.to_string()))
                }),
            })
            .collect();
        let last = (start + page.len() < visible.len())
            .then(|| page.last().map(|x| x.id.clone()))
            .flatten();
        Ok(ShardPage {
            shards: page,
            last_evaluated_shard_id: last,
        })
    }

    async fn get_shard_iterator(
        &self,
        _arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<String, StreamsError> {
        let mut s = self.lock();
        s.calls.get_shard_iterator += 1;
        s.calls.iterator_requests.push((shard_id.to_owned(), position.clone()));
        if Self::throttled(&mut s) {
            return Err(StreamsError::Throttled("LimitExceededException".into()));
        }
        if let Some(e) = Self::transient_not_found(&mut s, shard_id) {
            return Err(e);
        }
        let Some(idx) = s.shards.iter().position(|x| x.id == shard_id && !x.removed) else {
            return Err(StreamsError::ResourceNotFound(format!("shard {shard_id}")));
        };
        let sh = &s.shards[idx];
        let pos = match position {
            IteratorPosition::TrimHorizon => sh.trimmed,
            IteratorPosition::Latest => sh.records.len(),
            IteratorPosition::AtSequenceNumber(q) => sh.records.iter().take_while(|r| r.sequence_number < *q).count(),
            IteratorPosition::AfterSequenceNumber(q) => {
                sh.records.iter().take_while(|r| r.sequence_number <= *q).count()
            }
        };
        if pos < sh.trimmed {
            s.calls.trimmed += 1;
            return Err(StreamsError::TrimmedDataAccess(format!("{shard_id} before {pos}")));
        }
        Ok(Self::new_iterator(&mut s, idx, pos))
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage, StreamsError> {
        let mut s = self.lock();
        s.calls.get_records += 1;
        if Self::throttled(&mut s) {
            return Err(StreamsError::Throttled("ProvisionedThroughputExceededException".into()));
        }
        if s.expire_next > 0 || s.expire_at_call == Some(s.calls.get_records) {
            s.expire_next = s.expire_next.saturating_sub(1);
            s.calls.expired += 1;
            return Err(StreamsError::ExpiredIterator(iterator.to_owned()));
        }
        if let Some(e) = Self::transient_not_found(&mut s, iterator) {
            return Err(e);
        }
        let Some(&(idx, pos)) = s.iterators.get(iterator) else {
            return Err(StreamsError::Other(format!("unknown iterator {iterator}")));
        };
        let sh = &s.shards[idx];
        if sh.removed {
            return Err(StreamsError::ResourceNotFound(sh.id.clone()));
        }
        if s.empty_next > 0 {
            s.empty_next -= 1;
            let next_iterator = Some(Self::new_iterator(&mut s, idx, pos));
            return Ok(RecordsPage {
                records: Vec::new(),
                next_iterator,
                left_out: Vec::new(),
            });
        }
        if pos < sh.trimmed {
            let id = sh.id.clone();
            s.calls.trimmed += 1;
            return Err(StreamsError::TrimmedDataAccess(format!("{id} before {pos}")));
        }
        let end = (pos + limit as usize).min(sh.records.len());
        let records = sh.records[pos..end].to_vec();
        let done = sh.closed && end == sh.records.len();
        let next_iterator = (!done).then(|| Self::new_iterator(&mut s, idx, end));
        let left_out = std::mem::take(&mut s.left_out_next);
        Ok(RecordsPage {
            records,
            next_iterator,
            left_out,
        })
    }

    async fn latest_stream_arn(&self, _table_name: &str) -> Result<Option<String>, StreamsError> {
        Ok(self.lock().latest_stream_arn.clone())
    }
}

/// Roughly the bytes DynamoDB counts for a value (names and payloads; type overhead ignored).
fn approximate_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(m) => m.iter().map(|(k, v)| k.len() + approximate_size(v)).sum(),
        AttributeValue::L(l) => l.iter().map(approximate_size).sum(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_image_appends_the_given_keys_and_image() {
        let fake = FakeStreams::new();
        fake.add_shard("s1", None);
        let first = fake.put("s1", "a", 1);
        let keys = HashMap::from([("id".to_owned(), AttributeValue::S("k1".into()))]);
        let mut image = keys.clone();
        image.insert(
            "blob".to_owned(),
            AttributeValue::B(aws_smithy_types::Blob::new(vec![0u8; 100])),
        );
        let second = fake.put_image("s1", EventName::Modify, keys.clone(), image.clone());
        assert!(second > first);

        let it = fake
            .get_shard_iterator("arn", "s1", &IteratorPosition::TrimHorizon)
            .await
            .unwrap();
        let page = fake.get_records(&it, 10).await.unwrap();
        let r = &page.records[1];
        assert_eq!(r.sequence_number, second);
        assert_eq!(r.event_name, EventName::Modify);
        assert_eq!(r.keys, keys);
        assert_eq!(r.new_image.as_ref(), Some(&image));
        assert_eq!(r.size_bytes, Some(2 + 2 + 4 + 100));
        assert_ne!(r.event_id, page.records[0].event_id);
    }

    #[test]
    #[should_panic(expected = "no new image")]
    fn put_image_refuses_a_remove() {
        let fake = FakeStreams::new();
        fake.add_shard("s1", None);
        fake.put_image("s1", EventName::Remove, HashMap::new(), HashMap::new());
    }
}
