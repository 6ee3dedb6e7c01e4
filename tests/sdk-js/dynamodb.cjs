// DynamoDB through the AWS SDK for JavaScript v3: the low-level client, its waiters and
// paginators, and the document client (lib-dynamodb) that most Node.js code uses.
// Usage: node dynamodb.cjs ENDPOINT SCENARIO (see run.cjs).
"use strict";

const assert = require("node:assert/strict");
const ddb = require("@aws-sdk/client-dynamodb");
const doc = require("@aws-sdk/lib-dynamodb");
const { failure, main } = require("./run.cjs");

const scenarios = {
  async items(endpoint, config) {
    const client = new ddb.DynamoDBClient(config);
    const documents = doc.DynamoDBDocumentClient.from(client, {
      marshallOptions: { removeUndefinedValues: true },
      unmarshallOptions: { wrapNumbers: true },
    });
    const send = (command) => documents.send(command);
    await client.send(
      new ddb.CreateTableCommand({
        TableName: "js-orders",
        AttributeDefinitions: [
          { AttributeName: "customer", AttributeType: "S" },
          { AttributeName: "order", AttributeType: "N" },
          { AttributeName: "status", AttributeType: "S" },
        ],
        KeySchema: [
          { AttributeName: "customer", KeyType: "HASH" },
          { AttributeName: "order", KeyType: "RANGE" },
        ],
        GlobalSecondaryIndexes: [
          {
            IndexName: "by-status",
            KeySchema: [{ AttributeName: "status", KeyType: "HASH" }],
            Projection: { ProjectionType: "KEYS_ONLY" },
          },
        ],
        BillingMode: "PAY_PER_REQUEST",
      }),
    );
    await ddb.waitUntilTableExists({ client, maxWaitTime: 30, minDelay: 1 }, { TableName: "js-orders" });
    const taken = await failure(
      client.send(
        new ddb.CreateTableCommand({
          TableName: "js-orders",
          AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
          KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
          BillingMode: "PAY_PER_REQUEST",
        }),
      ),
    );
    assert.ok(taken instanceof ddb.ResourceInUseException, taken.name);

    // Every type the document client marshals, a 38-digit number kept exact by wrapNumbers.
    const item = {
      customer: "ada",
      order: 1,
      status: "open",
      total: doc.NumberValue.from("12345678901234567890.123456789012345678"),
      lines: [
        { sku: "A-1", quantity: 2 },
        { sku: "B-2", quantity: 1 },
      ],
      address: { city: "London", postcode: null },
      tags: new Set(["gift", "express"]),
      counts: new Set([1, 2, 3]),
      signature: Uint8Array.from([0, 1, 254, 255]),
      paid: false,
      note: undefined,
    };
    await send(new doc.PutCommand({ TableName: "js-orders", Item: item }));
    const { Item: stored } = await send(
      new doc.GetCommand({ TableName: "js-orders", Key: { customer: "ada", order: 1 } }),
    );
    assert.equal(stored.total.toString(), "12345678901234567890.123456789012345678");
    assert.equal(stored.order.toString(), "1");
    assert.deepEqual(
      stored.lines.map((line) => [line.sku, line.quantity.toString()]),
      [
        ["A-1", "2"],
        ["B-2", "1"],
      ],
    );
    assert.deepEqual(stored.address, { city: "London", postcode: null });
    assert.deepEqual([...stored.tags].sort(), ["express", "gift"]);
    assert.deepEqual([...stored.counts].map(String).sort(), ["1", "2", "3"]);
    assert.deepEqual([...stored.signature], [0, 1, 254, 255]);
    assert.equal(stored.paid, false);
    assert.ok(!("note" in stored));

    const { Attributes: updated } = await send(
      new doc.UpdateCommand({
        TableName: "js-orders",
        Key: { customer: "ada", order: 1 },
        UpdateExpression:
          "SET #s = :paid, #l[0].quantity = #l[0].quantity + :one ADD tags :new REMOVE address.postcode",
        ConditionExpression: "#s = :open AND attribute_exists(#l)",
        // Both are reserved words, which DynamoDB refuses in expressions.
        ExpressionAttributeNames: { "#s": "status", "#l": "lines" },
        ExpressionAttributeValues: { ":paid": "paid", ":open": "open", ":one": 1, ":new": new Set(["vip"]) },
        ReturnValues: "ALL_NEW",
      }),
    );
    assert.equal(updated.status, "paid");
    assert.equal(updated.lines[0].quantity.toString(), "3");
    assert.deepEqual([...updated.tags].sort(), ["express", "gift", "vip"]);
    assert.deepEqual(updated.address, { city: "London" });

    const conflict = await failure(
      send(
        new doc.UpdateCommand({
          TableName: "js-orders",
          Key: { customer: "ada", order: 1 },
          UpdateExpression: "SET paid = :yes",
          ConditionExpression: "#s = :open",
          ExpressionAttributeNames: { "#s": "status" },
          ExpressionAttributeValues: { ":yes": true, ":open": "open" },
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      ),
    );
    assert.ok(conflict instanceof ddb.ConditionalCheckFailedException, conflict.name);
    assert.deepEqual(conflict.Item.status, { S: "paid" });

    // 30 more orders in two batches of at most 25, then paginated reads.
    const orders = Array.from({ length: 30 }, (_, index) => ({
      customer: index % 2 ? "ada" : "bob",
      order: index + 2,
      status: index % 3 ? "open" : "shipped",
    }));
    for (const chunk of [orders.slice(0, 25), orders.slice(25)]) {
      const { UnprocessedItems } = await send(
        new doc.BatchWriteCommand({ RequestItems: { "js-orders": chunk.map((Item) => ({ PutRequest: { Item } })) } }),
      );
      assert.deepEqual(UnprocessedItems ?? {}, {});
    }
    const pages = [];
    for await (const page of doc.paginateQuery(
      { client: documents, pageSize: 4 },
      {
        TableName: "js-orders",
        KeyConditionExpression: "customer = :c AND #o > :min",
        FilterExpression: "#s = :open",
        ExpressionAttributeNames: { "#o": "order", "#s": "status" },
        ExpressionAttributeValues: { ":c": "ada", ":min": 1, ":open": "open" },
        ScanIndexForward: false,
      },
    )) {
      pages.push(page.Items.map((order) => Number(order.order.toString())));
    }
    assert.ok(pages.length >= 4, `${pages.length} pages`);
    const expected = orders
      .filter((order) => order.customer === "ada" && order.status === "open")
      .map((order) => order.order)
      .sort((a, b) => b - a);
    assert.deepEqual(pages.flat(), expected);

    let scanned = 0;
    for await (const page of doc.paginateScan({ client: documents, pageSize: 7 }, { TableName: "js-orders" })) {
      scanned += page.Count;
    }
    assert.equal(scanned, 31);
    const shipped = await send(
      new doc.QueryCommand({
        TableName: "js-orders",
        IndexName: "by-status",
        KeyConditionExpression: "#s = :shipped",
        ExpressionAttributeNames: { "#s": "status" },
        ExpressionAttributeValues: { ":shipped": "shipped" },
      }),
    );
    assert.equal(shipped.Count, orders.filter((order) => order.status === "shipped").length);

    const { Responses } = await send(
      new doc.BatchGetCommand({
        RequestItems: {
          "js-orders": {
            Keys: [
              { customer: "ada", order: 1 },
              { customer: "bob", order: 2 },
            ],
            ProjectionExpression: "#o",
            ExpressionAttributeNames: { "#o": "order" },
          },
        },
      }),
    );
    assert.deepEqual(Responses["js-orders"].map((order) => order.order.toString()).sort(), ["1", "2"]);

    // A transaction whose second condition fails changes nothing and says which one failed.
    const cancelled = await failure(
      send(
        new doc.TransactWriteCommand({
          TransactItems: [
            { Put: { TableName: "js-orders", Item: { customer: "cy", order: 1, status: "open" } } },
            {
              ConditionCheck: {
                TableName: "js-orders",
                Key: { customer: "ada", order: 1 },
                ConditionExpression: "#s = :open",
                ExpressionAttributeNames: { "#s": "status" },
                ExpressionAttributeValues: { ":open": "open" },
              },
            },
          ],
        }),
      ),
    );
    assert.ok(cancelled instanceof ddb.TransactionCanceledException, cancelled.name);
    assert.deepEqual(
      cancelled.CancellationReasons.map((reason) => reason.Code),
      ["None", "ConditionalCheckFailed"],
    );
    const { Item: none } = await send(
      new doc.GetCommand({ TableName: "js-orders", Key: { customer: "cy", order: 1 } }),
    );
    assert.equal(none, undefined);

    await client.send(new ddb.DeleteTableCommand({ TableName: "js-orders" }));
    await ddb.waitUntilTableNotExists({ client, maxWaitTime: 30, minDelay: 1 }, { TableName: "js-orders" });
    const missing = await failure(client.send(new ddb.DescribeTableCommand({ TableName: "js-orders" })));
    assert.ok(missing instanceof ddb.ResourceNotFoundException, missing.name);
    assert.equal(missing.$metadata.httpStatusCode, 400);
  },

  async validation(endpoint, config) {
    const client = new ddb.DynamoDBClient(config);
    await client.send(
      new ddb.CreateTableCommand({
        TableName: "js-keys",
        AttributeDefinitions: [{ AttributeName: "id", AttributeType: "S" }],
        KeySchema: [{ AttributeName: "id", KeyType: "HASH" }],
        BillingMode: "PAY_PER_REQUEST",
      }),
    );
    const wrongType = await failure(
      client.send(new ddb.PutItemCommand({ TableName: "js-keys", Item: { id: { N: "1" } } })),
    );
    assert.equal(wrongType.name, "ValidationException");
    assert.match(wrongType.message, /key/i);
    const syntax = await failure(
      client.send(
        new ddb.UpdateItemCommand({ TableName: "js-keys", Key: { id: { S: "a" } }, UpdateExpression: "SET = 1" }),
      ),
    );
    assert.equal(syntax.name, "ValidationException");
    const unused = await failure(
      client.send(
        new ddb.GetItemCommand({
          TableName: "js-keys",
          Key: { id: { S: "a" } },
          ExpressionAttributeNames: { "#unused": "x" },
        }),
      ),
    );
    assert.equal(unused.name, "ValidationException");
    const missing = await failure(
      client.send(new ddb.GetItemCommand({ TableName: "js-none", Key: { id: { S: "a" } } })),
    );
    assert.ok(missing instanceof ddb.ResourceNotFoundException, missing.name);
  },
};

main(scenarios);
