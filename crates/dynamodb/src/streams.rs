//! DynamoDB Streams: ListStreams, DescribeStream, GetShardIterator, GetRecords. A table's stream
//! has one shard; its records are written with the change that made them (same store
//! transaction) and kept for 24 hours.

use crate::model::{DynamoError, KeySchema, StreamView, TableId};
use crate::table::{StreamRecord, Table};
use crate::{DynamoDb, lock, now_ms};

#[derive(Clone, Debug)]
pub struct StreamDescription {
    pub arn: String,
    pub label: String,
    pub table: String,
    pub enabled: bool,
    pub view: StreamView,
    pub created_ms: u64,
    pub key: KeySchema,
    pub shard_id: String,
    /// (first, last) sequence numbers held, if any.
    pub range: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardIteratorType {
    TrimHorizon,
    Latest,
    AtSequenceNumber,
    AfterSequenceNumber,
}

impl ShardIteratorType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TRIM_HORIZON" => ShardIteratorType::TrimHorizon,
            "LATEST" => ShardIteratorType::Latest,
            "AT_SEQUENCE_NUMBER" => ShardIteratorType::AtSequenceNumber,
            "AFTER_SEQUENCE_NUMBER" => ShardIteratorType::AfterSequenceNumber,
            _ => return None,
        })
    }
}

/// A record as GetRecords returns it, with the stream's identity.
#[derive(Clone, Debug)]
pub struct StreamRecordView {
    pub record: StreamRecord,
    pub region: String,
    pub arn: String,
}

/// Shard iterators expire after 15 minutes, as in DynamoDB.
const ITERATOR_TTL_MS: u64 = 15 * 60 * 1000;

fn shard_id(table: &Table) -> String {
    let uid = &table.def.uid;
    format!("shardId-{:020}-{}", table.def.created_ms, uid.get(..8).unwrap_or(uid))
}

fn parse_arn(arn: &str) -> Option<(TableId, String)> {
    let (table_arn, label) = arn.split_once("/stream/")?;
    Some((TableId::from_arn(table_arn)?, label.to_string()))
}

/// A shard iterator: the stream, the shard, the next sequence to read and when it was issued.
fn iterator(arn: &str, shard: &str, next: u64) -> String {
    format!("{arn}|{shard}|{next}|{}", now_ms())
}

fn not_found(arn: &str) -> DynamoError {
    DynamoError::ResourceNotFound(format!("Requested resource not found: Stream: {arn} not found"))
}

impl DynamoDb {
    fn stream_table(&self, arn: &str) -> Result<crate::TableCell, DynamoError> {
        let (id, label) = parse_arn(arn).ok_or_else(|| DynamoError::validation(format!("Invalid StreamArn: {arn}")))?;
        let cell = self.registry().get(&id).cloned().ok_or_else(|| not_found(arn))?;
        let matches = lock(&cell).def.stream.as_ref().is_some_and(|s| s.label == label);
        if matches { Ok(cell) } else { Err(not_found(arn)) }
    }

    /// Streams of an account and region, optionally of one table: (stream ARN, table, label).
    pub fn list_streams(&self, account: &str, region: &str, table: Option<&str>) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .registry()
            .iter()
            .filter(|(id, _)| id.account == account && id.region == region && table.is_none_or(|t| t == id.name))
            .filter_map(|(id, cell)| {
                let t = lock(cell);
                let s = t.def.stream.as_ref()?;
                Some((t.def.stream_arn()?, id.name.clone(), s.label.clone()))
            })
            .collect();
        out.sort();
        out
    }

    pub fn describe_stream(&self, arn: &str) -> Result<StreamDescription, DynamoError> {
        let cell = self.stream_table(arn)?;
        let table = lock(&cell);
        let Some(stream) = table.def.stream.as_ref() else { return Err(not_found(arn)) };
        Ok(StreamDescription {
            arn: arn.to_string(),
            label: stream.label.clone(),
            table: table.def.id.name.clone(),
            enabled: stream.enabled,
            view: stream.view,
            created_ms: table.def.created_ms,
            key: table.def.key.clone(),
            shard_id: shard_id(&table),
            range: table.stream.front().zip(table.stream.back()).map(|(f, l)| (f.sequence, l.sequence)),
        })
    }

    pub fn get_shard_iterator(
        &self,
        arn: &str,
        shard: &str,
        kind: ShardIteratorType,
        sequence: Option<&str>,
    ) -> Result<String, DynamoError> {
        let cell = self.stream_table(arn)?;
        let table = lock(&cell);
        if shard != shard_id(&table) {
            return Err(DynamoError::ResourceNotFound("Requested resource not found: Shard does not exist".into()));
        }
        let seq = || -> Result<u64, DynamoError> {
            sequence.and_then(|s| s.parse().ok()).ok_or_else(|| {
                DynamoError::validation("Invalid SequenceNumber: a sequence number must be provided for AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER")
            })
        };
        let next = match kind {
            ShardIteratorType::TrimHorizon => table.stream.front().map_or(table.next_sequence, |r| r.sequence),
            ShardIteratorType::Latest => table.next_sequence,
            ShardIteratorType::AtSequenceNumber => seq()?,
            ShardIteratorType::AfterSequenceNumber => seq()? + 1,
        };
        if matches!(kind, ShardIteratorType::AtSequenceNumber | ShardIteratorType::AfterSequenceNumber)
            && table.stream.front().is_some_and(|r| next < r.sequence)
        {
            return Err(DynamoError::TrimmedDataAccess(
                "The operation attempted to read past the oldest stream record in a shard.".into(),
            ));
        }
        Ok(iterator(arn, shard, next))
    }

    /// Records from the iterator's position, at most `limit`; the next iterator.
    pub fn get_records(
        &self,
        iterator_text: &str,
        limit: usize,
    ) -> Result<(Vec<StreamRecordView>, String), DynamoError> {
        let invalid = || DynamoError::validation("Invalid ShardIterator");
        let mut parts = iterator_text.rsplitn(4, '|');
        let issued: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(invalid)?;
        let next: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(invalid)?;
        let shard = parts.next().ok_or_else(invalid)?;
        let arn = parts.next().ok_or_else(invalid)?;
        if now_ms().saturating_sub(issued) > ITERATOR_TTL_MS {
            return Err(DynamoError::ExpiredIterator(
                "Iterator expired. The iterator was created more than 15 minutes ago.".into(),
            ));
        }
        let cell = self.stream_table(arn)?;
        let table = lock(&cell);
        let start = table.stream.partition_point(|r| r.sequence < next);
        let records: Vec<StreamRecordView> = table
            .stream
            .range(start..)
            .take(limit)
            .map(|r| StreamRecordView { record: r.clone(), region: table.def.id.region.clone(), arn: arn.to_string() })
            .collect();
        let after = records.last().map_or(next, |r| r.record.sequence + 1);
        Ok((records, iterator(arn, shard, after)))
    }
}
