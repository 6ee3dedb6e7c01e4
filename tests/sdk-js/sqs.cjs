// SQS through the AWS SDK for JavaScript v3, the SDK of most Node.js and Lambda code.
// Usage: node sqs.cjs ENDPOINT SCENARIO (see run.cjs).
//
// The SDK checks what boto3 checks differently or not at all: it verifies the MD5 of every
// body it sends and receives (middleware-sdk-sqs), parses errors from the JSON body and the
// x-amzn-query-error header itself, and rewrites the request's host from the QueueUrl.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const sqs = require("@aws-sdk/client-sqs");
const { failure, main } = require("./run.cjs");

// A client and a shorthand for its calls.
function connect(config) {
  const client = new sqs.SQSClient(config);
  return [client, (Command, input) => client.send(new Command(input))];
}

const scenarios = {
  async standard(endpoint, config) {
    const [, send] = connect(config);
    const { QueueUrl: url } = await send(sqs.CreateQueueCommand, {
      QueueName: "js-orders",
      Attributes: { VisibilityTimeout: "30", DelaySeconds: "0" },
      tags: { team: "web" },
    });
    assert.equal(url, `${endpoint}/000000000000/js-orders`);
    assert.equal((await send(sqs.GetQueueUrlCommand, { QueueName: "js-orders" })).QueueUrl, url);
    const listed = await send(sqs.ListQueuesCommand, { QueueNamePrefix: "js-" });
    assert.deepEqual(listed.QueueUrls, [url]);
    assert.deepEqual((await send(sqs.ListQueueTagsCommand, { QueueUrl: url })).Tags, { team: "web" });

    await send(sqs.SetQueueAttributesCommand, { QueueUrl: url, Attributes: { MaximumMessageSize: "2048" } });
    const { Attributes: attributes } = await send(sqs.GetQueueAttributesCommand, {
      QueueUrl: url,
      AttributeNames: ["All"],
    });
    assert.equal(attributes.MaximumMessageSize, "2048");
    assert.equal(attributes.QueueArn, "arn:aws:sqs:us-east-1:000000000000:js-orders");

    // Every attribute type, as this SDK serializes them (binary as base64); they come back intact.
    const sent = await send(sqs.SendMessageCommand, {
      QueueUrl: url,
      MessageBody: "order 1 ✓",
      MessageAttributes: {
        customer: { DataType: "String", StringValue: "ada" },
        amount: { DataType: "Number.euros", StringValue: "12.50" },
        signature: { DataType: "Binary", BinaryValue: Uint8Array.from([0, 1, 2, 255]) },
      },
      MessageSystemAttributes: {
        AWSTraceHeader: { DataType: "String", StringValue: "Root=1-5759e988-bd862e3fe1be46a994272793" },
      },
    });
    assert.equal(sent.MD5OfMessageBody, crypto.createHash("md5").update("order 1 ✓").digest("hex"));
    assert.ok(sent.MD5OfMessageAttributes && sent.MD5OfMessageSystemAttributes);

    const batch = await send(sqs.SendMessageBatchCommand, {
      QueueUrl: url,
      Entries: [
        { Id: "a", MessageBody: "order 2" },
        { Id: "b", MessageBody: "order 3", MessageAttributes: { n: { DataType: "Number", StringValue: "3" } } },
        { Id: "c", MessageBody: "x".repeat(4096) },
      ],
    });
    assert.deepEqual(batch.Successful.map((entry) => entry.Id).sort(), ["a", "b"]);
    assert.equal(batch.Failed.length, 1);
    assert.equal(batch.Failed[0].Id, "c");
    assert.equal(batch.Failed[0].SenderFault, true);

    const received = [];
    while (received.length < 3) {
      const { Messages = [] } = await send(sqs.ReceiveMessageCommand, {
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["All"],
      });
      assert.ok(Messages.length > 0, "messages went missing");
      received.push(...Messages);
    }
    const first = received.find((message) => message.MessageId === sent.MessageId);
    assert.equal(first.Body, "order 1 ✓");
    assert.equal(first.MessageAttributes.customer.StringValue, "ada");
    assert.equal(first.MessageAttributes.amount.DataType, "Number.euros");
    assert.deepEqual([...first.MessageAttributes.signature.BinaryValue], [0, 1, 2, 255]);
    assert.equal(first.Attributes.ApproximateReceiveCount, "1");
    assert.equal(first.Attributes.AWSTraceHeader, "Root=1-5759e988-bd862e3fe1be46a994272793");
    assert.ok(Number(first.Attributes.SentTimestamp) > Date.now() - 60_000);

    // Visibility: one message made visible at once comes back; the others stay hidden.
    const again = received.find((message) => message.Body === "order 2");
    const changed = await send(sqs.ChangeMessageVisibilityBatchCommand, {
      QueueUrl: url,
      Entries: [
        { Id: "now", ReceiptHandle: again.ReceiptHandle, VisibilityTimeout: 0 },
        { Id: "bad", ReceiptHandle: "not-a-handle", VisibilityTimeout: 0 },
      ],
    });
    assert.deepEqual(
      changed.Successful.map((entry) => entry.Id),
      ["now"],
    );
    assert.equal(changed.Failed[0].Code, "ReceiptHandleIsInvalid");
    const { Messages: back } = await send(sqs.ReceiveMessageCommand, {
      QueueUrl: url,
      WaitTimeSeconds: 1,
      MessageSystemAttributeNames: ["ApproximateReceiveCount"],
    });
    assert.equal(back.length, 1);
    assert.equal(back[0].Body, "order 2");
    assert.equal(back[0].Attributes.ApproximateReceiveCount, "2");

    const deleted = await send(sqs.DeleteMessageBatchCommand, {
      QueueUrl: url,
      Entries: received
        .filter((message) => message !== again)
        .concat(back)
        .map((message, index) => ({ Id: `m${index}`, ReceiptHandle: message.ReceiptHandle })),
    });
    assert.equal(deleted.Successful.length, 3);
    assert.deepEqual(deleted.Failed ?? [], []);
    const counts = await send(sqs.GetQueueAttributesCommand, {
      QueueUrl: url,
      AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    });
    assert.deepEqual(counts.Attributes, {
      ApproximateNumberOfMessages: "0",
      ApproximateNumberOfMessagesNotVisible: "0",
    });

    await send(sqs.TagQueueCommand, { QueueUrl: url, Tags: { stage: "test" } });
    await send(sqs.UntagQueueCommand, { QueueUrl: url, TagKeys: ["team"] });
    assert.deepEqual((await send(sqs.ListQueueTagsCommand, { QueueUrl: url })).Tags, { stage: "test" });
    await send(sqs.PurgeQueueCommand, { QueueUrl: url });
    const purgeAgain = await failure(send(sqs.PurgeQueueCommand, { QueueUrl: url }));
    assert.equal(purgeAgain.name, "PurgeQueueInProgress");
    await send(sqs.DeleteQueueCommand, { QueueUrl: url });
    assert.deepEqual((await send(sqs.ListQueuesCommand, { QueueNamePrefix: "js-" })).QueueUrls ?? [], []);
  },

  async fifo(endpoint, config) {
    const [, send] = connect(config);
    const { QueueUrl: url } = await send(sqs.CreateQueueCommand, {
      QueueName: "js-jobs.fifo",
      Attributes: { FifoQueue: "true", ContentBasedDeduplication: "true" },
    });
    const sequence = [];
    for (const [group, body] of [
      ["g1", "a1"],
      ["g2", "b1"],
      ["g1", "a2"],
      ["g1", "a1"],
      ["g2", "b2"],
    ]) {
      const sent = await send(sqs.SendMessageCommand, { QueueUrl: url, MessageBody: body, MessageGroupId: group });
      sequence.push(sent.SequenceNumber);
    }
    // The second "a1" is a duplicate inside the window: the same message id, no new message.
    assert.equal(sequence[3], sequence[0]);
    assert.ok(BigInt(sequence[4]) > BigInt(sequence[2]));

    const { Messages: messages } = await send(sqs.ReceiveMessageCommand, {
      QueueUrl: url,
      MaxNumberOfMessages: 10,
      MessageSystemAttributeNames: ["All"],
      ReceiveRequestAttemptId: "attempt-1",
    });
    // Order holds within a group (SQS returns as many of one group's messages together as it can).
    const group = (id) => messages.filter((message) => message.Attributes.MessageGroupId === id);
    assert.deepEqual(
      group("g1").map((message) => message.Body),
      ["a1", "a2"],
    );
    assert.deepEqual(
      group("g2").map((message) => message.Body),
      ["b1", "b2"],
    );
    assert.equal(group("g1")[0].Attributes.SequenceNumber, sequence[0]);
    // The groups are in flight: nothing else is handed out until they are deleted or visible.
    const { Messages: none = [] } = await send(sqs.ReceiveMessageCommand, { QueueUrl: url });
    assert.deepEqual(none, []);

    const missingGroup = await failure(send(sqs.SendMessageCommand, { QueueUrl: url, MessageBody: "x" }));
    assert.equal(missingGroup.name, "MissingParameter");
    await send(sqs.DeleteQueueCommand, { QueueUrl: url });
  },

  async errors(endpoint, config) {
    const [, send] = connect(config);
    const missing = await failure(send(sqs.GetQueueUrlCommand, { QueueName: "js-nowhere" }));
    assert.ok(missing instanceof sqs.QueueDoesNotExist, `${missing.name}: ${missing.message}`);
    assert.equal(missing.$metadata.httpStatusCode, 400);
    assert.equal(missing.Code, "AWS.SimpleQueueService.NonExistentQueue");
    assert.equal(missing.$fault, "client");

    const { QueueUrl: url } = await send(sqs.CreateQueueCommand, { QueueName: "js-errors" });
    const differs = await failure(
      send(sqs.CreateQueueCommand, { QueueName: "js-errors", Attributes: { VisibilityTimeout: "99" } }),
    );
    assert.equal(differs.name, "QueueNameExists");

    const duplicate = await failure(
      send(sqs.SendMessageBatchCommand, {
        QueueUrl: url,
        Entries: [
          { Id: "a", MessageBody: "1" },
          { Id: "a", MessageBody: "2" },
        ],
      }),
    );
    assert.ok(duplicate instanceof sqs.BatchEntryIdsNotDistinct, duplicate.name);
    const empty = await failure(send(sqs.DeleteMessageBatchCommand, { QueueUrl: url, Entries: [] }));
    assert.ok(empty instanceof sqs.EmptyBatchRequest, empty.name);
    const tooMany = await failure(
      send(sqs.SendMessageBatchCommand, {
        QueueUrl: url,
        Entries: Array.from({ length: 11 }, (_, index) => ({ Id: `e${index}`, MessageBody: "x" })),
      }),
    );
    assert.ok(tooMany instanceof sqs.TooManyEntriesInBatchRequest, tooMany.name);
    const handle = await failure(send(sqs.DeleteMessageCommand, { QueueUrl: url, ReceiptHandle: "garbage" }));
    assert.ok(handle instanceof sqs.ReceiptHandleIsInvalid, handle.name);
    const attribute = await failure(
      send(sqs.GetQueueAttributesCommand, { QueueUrl: url, AttributeNames: ["NoSuchAttribute"] }),
    );
    assert.ok(attribute instanceof sqs.InvalidAttributeName, attribute.name);
    const big = await failure(send(sqs.SendMessageCommand, { QueueUrl: url, MessageBody: "x".repeat(1_048_577) }));
    assert.equal(big.name, "InvalidParameterValue");
    assert.equal(big.$metadata.httpStatusCode, 400);
    const wait = await failure(send(sqs.ReceiveMessageCommand, { QueueUrl: url, WaitTimeSeconds: 21 }));
    assert.equal(wait.name, "InvalidParameterValue");
  },

  async "long-polling"(endpoint, config) {
    const [, send] = connect(config);
    const { QueueUrl: url } = await send(sqs.CreateQueueCommand, { QueueName: "js-poll" });
    let started = Date.now();
    const { Messages: none = [] } = await send(sqs.ReceiveMessageCommand, { QueueUrl: url, WaitTimeSeconds: 2 });
    const waited = Date.now() - started;
    assert.deepEqual(none, []);
    assert.ok(waited >= 1900 && waited < 3000, `an empty wait of 2 s took ${waited} ms`);

    // A receive waiting on the queue gets a message sent meanwhile as soon as it is sent.
    const [other] = connect(config);
    started = Date.now();
    const waiting = send(sqs.ReceiveMessageCommand, { QueueUrl: url, WaitTimeSeconds: 10 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const sentAt = Date.now();
    await other.send(new sqs.SendMessageCommand({ QueueUrl: url, MessageBody: "wake up" }));
    const { Messages: messages } = await waiting;
    assert.equal(messages[0].Body, "wake up");
    assert.ok(Date.now() - sentAt < 1000, `answered ${Date.now() - sentAt} ms after the send`);
  },

  async "dead-letter"(endpoint, config) {
    const [, send] = connect(config);
    const { QueueUrl: dlq } = await send(sqs.CreateQueueCommand, { QueueName: "js-dlq" });
    const dlqArn = "arn:aws:sqs:us-east-1:000000000000:js-dlq";
    const { QueueUrl: source } = await send(sqs.CreateQueueCommand, {
      QueueName: "js-work",
      Attributes: {
        VisibilityTimeout: "0",
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 1 }),
      },
    });
    await send(sqs.SendMessageCommand, { QueueUrl: source, MessageBody: "poison" });
    const first = await send(sqs.ReceiveMessageCommand, { QueueUrl: source });
    assert.equal(first.Messages[0].Body, "poison");
    // Received once and back: the next receive moves it to the dead-letter queue.
    const { Messages: gone = [] } = await send(sqs.ReceiveMessageCommand, { QueueUrl: source });
    assert.deepEqual(gone, []);
    const { Messages: dead } = await send(sqs.ReceiveMessageCommand, { QueueUrl: dlq, VisibilityTimeout: 0 });
    assert.equal(dead[0].Body, "poison");
    const sources = await send(sqs.ListDeadLetterSourceQueuesCommand, { QueueUrl: dlq });
    assert.deepEqual(sources.queueUrls, [source]);

    // Redrive back to the source.
    const { TaskHandle: task } = await send(sqs.StartMessageMoveTaskCommand, { SourceArn: dlqArn });
    assert.ok(task);
    for (let attempt = 0; ; attempt++) {
      const { Results: results } = await send(sqs.ListMessageMoveTasksCommand, { SourceArn: dlqArn });
      if (results[0].Status === "COMPLETED") {
        assert.equal(results[0].ApproximateNumberOfMessagesMoved, 1);
        break;
      }
      assert.ok(attempt < 50, `the move task stayed ${results[0].Status}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const { Messages: redriven } = await send(sqs.ReceiveMessageCommand, { QueueUrl: source });
    assert.equal(redriven[0].Body, "poison");
  },
};

main(scenarios);
