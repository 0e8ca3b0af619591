// Embedding gather: out[i, c] = table[ids[i], c]; ids are checked against the vocabulary on the host.
struct EmbedArgs { total: u32, H: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> args: EmbedArgs;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(EW_WG)
fn embed(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * EW_WG + lid.x;
  if (i < args.total) { out[i] = table[u32(ids[i / args.H]) * args.H + i % args.H]; }
}
