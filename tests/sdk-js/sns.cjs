// SNS through the AWS SDK for JavaScript v3, which speaks SNS's query protocol (XML answers),
// fanning out to SQS queues read with the same SDK.
// Usage: node sns.cjs ENDPOINT SCENARIO (see run.cjs).
"use strict";

const assert = require("node:assert/strict");
const sns = require("@aws-sdk/client-sns");
const sqs = require("@aws-sdk/client-sqs");
const { failure, main } = require("./run.cjs");

// Every message a queue holds, read and deleted (a FIFO group hands out nothing more while a
// message of it is in flight) until it is empty.
async function drain(queues, url) {
  const messages = [];
  for (;;) {
    const { Messages = [] } = await queues.send(
      new sqs.ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageAttributeNames: ["All"],
      }),
    );
    if (Messages.length === 0) return messages;
    messages.push(...Messages);
    const Entries = Messages.map((message, index) => ({ Id: `${index}`, ReceiptHandle: message.ReceiptHandle }));
    await queues.send(new sqs.DeleteMessageBatchCommand({ QueueUrl: url, Entries }));
  }
}

// A queue subscribed to the topic, with the subscription's attributes.
async function subscribedQueue(topics, queues, topic, name, attributes) {
  const { QueueUrl: url } = await queues.send(
    new sqs.CreateQueueCommand({ QueueName: name, Attributes: name.endsWith(".fifo") ? { FifoQueue: "true" } : {} }),
  );
  const arn = `arn:aws:sqs:us-east-1:000000000000:${name}`;
  const { SubscriptionArn } = await topics.send(
    new sns.SubscribeCommand({
      TopicArn: topic,
      Protocol: "sqs",
      Endpoint: arn,
      Attributes: attributes,
      ReturnSubscriptionArn: true,
    }),
  );
  assert.ok(SubscriptionArn.startsWith(`${topic}:`), SubscriptionArn);
  return url;
}

const scenarios = {
  async "fan-out"(endpoint, config) {
    const topics = new sns.SNSClient(config);
    const queues = new sqs.SQSClient(config);
    const { TopicArn: topic } = await topics.send(
      new sns.CreateTopicCommand({
        Name: "js-events",
        Attributes: { DisplayName: "Events" },
        Tags: [{ Key: "team", Value: "web" }],
      }),
    );
    assert.equal(topic, "arn:aws:sns:us-east-1:000000000000:js-events");
    const { Attributes: attributes } = await topics.send(new sns.GetTopicAttributesCommand({ TopicArn: topic }));
    assert.equal(attributes.DisplayName, "Events");

    const raw = await subscribedQueue(topics, queues, topic, "js-raw", {
      RawMessageDelivery: "true",
      FilterPolicy: JSON.stringify({ kind: ["order"] }),
    });
    const enveloped = await subscribedQueue(topics, queues, topic, "js-enveloped", {});
    const { Subscriptions: subscriptions } = await topics.send(
      new sns.ListSubscriptionsByTopicCommand({ TopicArn: topic }),
    );
    assert.equal(subscriptions.length, 2);

    const { MessageId: id } = await topics.send(
      new sns.PublishCommand({
        TopicArn: topic,
        Subject: "New order",
        Message: "order 1 ✓",
        MessageAttributes: {
          kind: { DataType: "String", StringValue: "order" },
          amount: { DataType: "Number", StringValue: "12.5" },
          blob: { DataType: "Binary", BinaryValue: Uint8Array.from([1, 2, 3]) },
        },
      }),
    );
    const batch = await topics.send(
      new sns.PublishBatchCommand({
        TopicArn: topic,
        PublishBatchRequestEntries: [
          { Id: "a", Message: "order 2", MessageAttributes: { kind: { DataType: "String", StringValue: "order" } } },
          { Id: "b", Message: "refund 1", MessageAttributes: { kind: { DataType: "String", StringValue: "refund" } } },
        ],
      }),
    );
    assert.deepEqual(batch.Successful.map((entry) => entry.Id).sort(), ["a", "b"]);

    // The filter lets orders through to the raw queue; the enveloped one gets everything.
    const rawMessages = await drain(queues, raw);
    assert.deepEqual(rawMessages.map((message) => message.Body).sort(), ["order 1 ✓", "order 2"]);
    const first = rawMessages.find((message) => message.Body === "order 1 ✓");
    assert.equal(first.MessageAttributes.amount.StringValue, "12.5");
    assert.deepEqual([...first.MessageAttributes.blob.BinaryValue], [1, 2, 3]);
    const envelopes = (await drain(queues, enveloped)).map((message) => JSON.parse(message.Body));
    assert.deepEqual(envelopes.map((envelope) => envelope.Message).sort(), ["order 1 ✓", "order 2", "refund 1"]);
    const envelope = envelopes.find((each) => each.MessageId === id);
    assert.equal(envelope.Type, "Notification");
    assert.equal(envelope.Subject, "New order");
    assert.equal(envelope.TopicArn, topic);
    assert.deepEqual(envelope.MessageAttributes.kind, { Type: "String", Value: "order" });

    const { Tags: tags } = await topics.send(new sns.ListTagsForResourceCommand({ ResourceArn: topic }));
    assert.deepEqual(tags, [{ Key: "team", Value: "web" }]);
    await topics.send(new sns.DeleteTopicCommand({ TopicArn: topic }));
    const gone = await failure(topics.send(new sns.GetTopicAttributesCommand({ TopicArn: topic })));
    assert.ok(gone instanceof sns.NotFoundException, gone.name);
    assert.equal(gone.$metadata.httpStatusCode, 404);
  },

  async fifo(endpoint, config) {
    const topics = new sns.SNSClient(config);
    const queues = new sqs.SQSClient(config);
    const { TopicArn: topic } = await topics.send(
      new sns.CreateTopicCommand({
        Name: "js-trades.fifo",
        Attributes: { FifoTopic: "true", ContentBasedDeduplication: "true" },
      }),
    );
    const url = await subscribedQueue(topics, queues, topic, "js-trades.fifo", { RawMessageDelivery: "true" });
    for (const body of ["buy 1", "sell 1", "buy 2", "buy 1"]) {
      const { SequenceNumber } = await topics.send(
        new sns.PublishCommand({ TopicArn: topic, Message: body, MessageGroupId: "acct-1" }),
      );
      assert.ok(SequenceNumber);
    }
    // The second "buy 1" is a duplicate within the window; the rest arrive in order.
    assert.deepEqual(
      (await drain(queues, url)).map((message) => message.Body),
      ["buy 1", "sell 1", "buy 2"],
    );
  },

  async errors(endpoint, config) {
    const topics = new sns.SNSClient(config);
    const bad = await failure(topics.send(new sns.CreateTopicCommand({ Name: "bad name" })));
    assert.ok(bad instanceof sns.InvalidParameterException, bad.name);
    assert.equal(bad.$metadata.httpStatusCode, 400);
    const missing = await failure(
      topics.send(new sns.PublishCommand({ TopicArn: "arn:aws:sns:us-east-1:000000000000:js-none", Message: "x" })),
    );
    assert.ok(missing instanceof sns.NotFoundException, missing.name);
    const { TopicArn: topic } = await topics.send(new sns.CreateTopicCommand({ Name: "js-plain" }));
    const protocol = await failure(
      topics.send(new sns.SubscribeCommand({ TopicArn: topic, Protocol: "carrier-pigeon", Endpoint: "x" })),
    );
    assert.ok(protocol instanceof sns.InvalidParameterException, protocol.name);
    const empty = await failure(topics.send(new sns.PublishCommand({ TopicArn: topic, Message: "" })));
    assert.ok(empty instanceof sns.InvalidParameterException, empty.name);
  },
};

main(scenarios);
