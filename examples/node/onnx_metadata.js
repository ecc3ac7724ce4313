// Read an ONNX file's metadata_props without an ONNX library (onnxruntime-node does not expose
// custom metadata). ModelProto is a protobuf message; we walk its top-level fields only and skip
// the graph (field 7, the weights) by its length prefix. docs/EMBEDDING.md, "Reading the metadata".
//
//   ModelProto field 1  ir_version      varint
//   ModelProto field 8  opset_import    message OperatorSetIdProto { 1: domain (string), 2: version (varint) }
//   ModelProto field 14 metadata_props  message StringStringEntryProto { 1: key, 2: value } (strings)
//
// Works in Node (require) and in the browser (<script>: window.SkinOnnx.readOnnxHeader); buf is a
// Uint8Array (a Node Buffer is one).
(function (root, factory) {
  'use strict';
  const api = factory();
  if (typeof module === 'object' && module.exports) module.exports = api;
  else root.SkinOnnx = Object.assign(root.SkinOnnx || {}, api);
}(typeof self !== 'undefined' ? self : this, () => {
'use strict';

function readVarint(buf, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const byte = buf[pos++];
    value += (byte & 0x7f) * scale; // plain arithmetic: safe up to 2^53, unlike 32-bit shifts
    if ((byte & 0x80) === 0) return [value, pos];
    scale *= 128;
    if (scale > 2 ** 63) throw new Error('varint too long');
  }
}

// Calls visit(fieldNumber, value) for each field in buf[start, end): value is a number for
// varints and [begin, end] for length-delimited fields; fixed-width fields are skipped.
function walkFields(buf, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      let value;
      [value, pos] = readVarint(buf, pos);
      visit(field, value);
    } else if (wire === 2) {
      let length;
      [length, pos] = readVarint(buf, pos);
      if (pos + length > end) throw new Error('field runs past the end of the message');
      visit(field, [pos, pos + length]);
      pos += length;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
  if (pos !== end) throw new Error('message ends inside a field');
}

/** @returns {{irVersion: number, opsets: Object<string, number>, metadata: Object<string, string>}} */
function readOnnxHeader(buf) {
  const utf8 = new TextDecoder('utf-8');
  const text = ([a, b]) => utf8.decode(buf.subarray(a, b));
  const out = { irVersion: 0, opsets: {}, metadata: {} };
  walkFields(buf, 0, buf.length, (field, value) => {
    if (field === 1) {
      out.irVersion = value;
    } else if (field === 8) {
      let domain = '';
      let version = 0;
      walkFields(buf, value[0], value[1], (f, v) => {
        if (f === 1) domain = text(v);
        if (f === 2) version = v;
      });
      out.opsets[domain || 'ai.onnx'] = version;
    } else if (field === 14) {
      let key = '';
      let val = '';
      walkFields(buf, value[0], value[1], (f, v) => {
        if (f === 1) key = text(v);
        if (f === 2) val = text(v);
      });
      out.metadata[key] = val;
    }
  });
  if (!out.irVersion) throw new Error('not an ONNX model (no IR version)');
  return out;
}

return { readOnnxHeader };
}));
