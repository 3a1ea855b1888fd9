// Hand-made workflows for the UI-to-API conversion references, built in ComfyUI's own editor
// with its own graph API (what a user does with the mouse), then saved as the editor saves them.
// Each case covers what the bundled templates do not: muted nodes, chains of reroutes, bypass
// type matching, PrimitiveNodes, dynamic prompts, file name replacements, subgraphs (nested,
// promoted widgets, two instances) and a legacy group node. Evaluated by ui_references.py.
(() => {
  const app = window.app
  const LiteGraph = window.LiteGraph
  const add = (type, pos) => {
    const node = LiteGraph.createNode(type)
    if (!node) throw new Error(`no node type ${type}`)
    app.graph.add(node)
    if (pos) node.pos = pos
    return node
  }
  const set = (node, name, value) => {
    const widget = node.widgets.find((w) => w.name === name)
    if (!widget) throw new Error(`${node.type} has no widget ${name}`)
    widget.value = value
    widget.callback?.(value)
  }
  const setPrimitive = (node, value) => {
    // A PrimitiveNode's widget takes the name of the first input it feeds.
    const widget = node.widgets?.[0]
    if (!widget) throw new Error('the PrimitiveNode has no widget yet')
    widget.value = value
    widget.callback?.(value)
  }
  const link = (from, slot, to, input) => {
    if (!from.connect(slot, to, input)) throw new Error(`cannot link ${from.type} -> ${to.type}.${input}`)
  }
  const fresh = () => app.graph.clear()

  const cases = {}

  cases.mute_bypass_reroute = async () => {
    fresh()
    const image = add('EmptyImage')
    set(image, 'width', 64)
    set(image, 'height', 32)
    set(image, 'color', 255)
    const invert = add('ImageInvert')
    link(image, 0, invert, 'image')
    invert.mode = 4
    const r1 = add('Reroute')
    link(invert, 0, r1, 0)
    const r2 = add('Reroute')
    link(r1, 0, r2, 0)
    const save = add('SaveImage')
    link(r2, 0, save, 'images')
    set(save, 'filename_prefix', 'through_bypass')
    // A muted node feeding a widget input: the input is left out, not its widget value.
    const width = add('PrimitiveInt')
    set(width, 'value', 7)
    width.mode = 2
    const scale = add('ImageScale')
    link(image, 0, scale, 'image')
    link(width, 0, scale, 'width')
    set(scale, 'height', 48)
    const preview = add('PreviewImage')
    link(scale, 0, preview, 'images')
    // A bypassed KSampler passes its latent on (the input of the output's type).
    const ckpt = add('CheckpointLoaderSimple')
    const latent = add('EmptyLatentImage')
    const sampler = add('KSampler')
    link(ckpt, 0, sampler, 'model')
    link(latent, 0, sampler, 'latent_image')
    sampler.mode = 4
    const decode = add('VAEDecode')
    link(sampler, 0, decode, 'samples')
    link(ckpt, 2, decode, 'vae')
    const save2 = add('SaveImage')
    link(decode, 0, save2, 'images')
    // A bypassed node with no input of the wanted type: the input is left unset.
    const decode2 = add('VAEDecode')
    link(latent, 0, decode2, 'samples')
    link(ckpt, 2, decode2, 'vae')
    decode2.mode = 4
    const save3 = add('SaveImage')
    link(decode2, 0, save3, 'images')
    // An any-type input ('*') behind a bypassed node: the input at the same index.
    const scale2 = add('ImageScale')
    link(invert, 0, scale2, 'image')
    scale2.mode = 4
    const any = add('PreviewAny')
    link(scale2, 0, any, 'source')
    // A reroute that leads nowhere.
    const r3 = add('Reroute')
    const blur = add('ImageBlur')
    link(r3, 0, blur, 'image')
    const preview2 = add('PreviewImage')
    link(blur, 0, preview2, 'images')
  }

  cases.primitives_and_widget_inputs = async () => {
    fresh()
    const ckpt = add('CheckpointLoaderSimple')
    const latent = add('EmptyLatentImage')
    const positive = add('CLIPTextEncode')
    link(ckpt, 1, positive, 'clip')
    const negative = add('CLIPTextEncode')
    link(ckpt, 1, negative, 'clip')
    const samplers = [add('KSampler'), add('KSampler')]
    for (const s of samplers) {
      link(ckpt, 0, s, 'model')
      link(positive, 0, s, 'positive')
      link(negative, 0, s, 'negative')
      link(latent, 0, s, 'latent_image')
    }
    set(samplers[1], 'control_after_generate', 'fixed')
    set(samplers[1], 'cfg', 6.5)
    // One PrimitiveNode feeds the seed of both samplers.
    const seed = add('PrimitiveNode')
    link(seed, 0, samplers[0], 'seed')
    link(seed, 0, samplers[1], 'seed')
    setPrimitive(seed, 123456789)
    // A multiline text primitive (Windows line ends, a comment, a choice).
    const text = add('PrimitiveNode')
    link(text, 0, positive, 'text')
    setPrimitive(text, 'a photo of {a cat|a dog},\r\nsharp // not sent\r\n/* nor this */focus')
    set(negative, 'text', 'blurry, \\{literal braces\\}')
    // A widget input linked from a real node is a link.
    const steps = add('PrimitiveInt')
    set(steps, 'value', 12)
    link(steps, 0, samplers[0], 'steps')
    for (const s of samplers) {
      const decode = add('VAEDecode')
      link(s, 0, decode, 'samples')
      link(ckpt, 2, decode, 'vae')
      const save = add('SaveImage')
      link(decode, 0, save, 'images')
      set(save, 'filename_prefix', 'seed_%KSampler.seed%_%EmptyLatentImage.width%x%EmptyLatentImage.height%')
    }
  }

  cases.subgraphs = async () => {
    fresh()
    const ckpt = add('CheckpointLoaderSimple', [0, 0])
    const latent = add('EmptyLatentImage', [0, 300])
    const positive = add('CLIPTextEncode', [300, 0])
    const negative = add('CLIPTextEncode', [300, 300])
    link(ckpt, 1, positive, 'clip')
    link(ckpt, 1, negative, 'clip')
    set(positive, 'text', 'a red fox')
    set(negative, 'text', 'lowres')
    const steps = add('PrimitiveInt', [0, 600])
    set(steps, 'value', 9)
    const sampler = add('KSampler', [600, 0])
    link(ckpt, 0, sampler, 'model')
    link(positive, 0, sampler, 'positive')
    link(negative, 0, sampler, 'negative')
    link(latent, 0, sampler, 'latent_image')
    link(steps, 0, sampler, 'steps')
    set(sampler, 'seed', 42)
    const decode = add('VAEDecode', [900, 0])
    link(sampler, 0, decode, 'samples')
    link(ckpt, 2, decode, 'vae')
    const invert = add('ImageInvert', [1100, 0])
    link(decode, 0, invert, 'image')
    invert.mode = 4
    const save = add('SaveImage', [1300, 0])
    link(invert, 0, save, 'images')
    // Sampler and decoder (and the bypassed invert) become a subgraph.
    const inner = app.graph.convertToSubgraph(new Set([sampler, decode, invert]))
    // The steps link into it is cut: the subgraph node's promoted 'steps' widget takes over.
    const stepsInput = inner.node.inputs.findIndex((i) => i.name === 'steps')
    inner.node.disconnectInput(stepsInput)
    const promoted = inner.node.widgets.find((w) => w.name === 'steps')
    if (promoted) promoted.value = 17
    // That subgraph node and the positive prompt become an outer subgraph (nested).
    const outer = app.graph.convertToSubgraph(new Set([inner.node, positive]))
    // A second instance of the inner subgraph at the top level, muted.
    const second = LiteGraph.createNode(inner.subgraph.id)
    app.graph.add(second)
    second.pos = [600, 700]
    link(ckpt, 0, second, 'model')
    second.mode = 2
    const save2 = add('SaveImage', [900, 700])
    link(second, 0, save2, 'images')
    if (!outer.node) throw new Error('no outer subgraph')
  }

  // The legacy group node: its nodes are made here and selected; ui_references.py runs the
  // editor's "Convert to Group Node" command and names it in the editor's dialog.
  cases.group_node_parts = async () => {
    fresh()
    const ckpt = add('CheckpointLoaderSimple', [0, 0])
    const latent = add('EmptyLatentImage', [0, 300])
    set(latent, 'width', 320)
    const positive = add('CLIPTextEncode', [300, 0])
    const negative = add('CLIPTextEncode', [300, 300])
    link(ckpt, 1, positive, 'clip')
    link(ckpt, 1, negative, 'clip')
    set(positive, 'text', 'inside a group node')
    set(negative, 'text', 'lowres')
    const sampler = add('KSampler', [600, 0])
    link(ckpt, 0, sampler, 'model')
    link(positive, 0, sampler, 'positive')
    link(negative, 0, sampler, 'negative')
    link(latent, 0, sampler, 'latent_image')
    set(sampler, 'seed', 7)
    set(sampler, 'steps', 5)
    const decode = add('VAEDecode', [900, 0])
    link(sampler, 0, decode, 'samples')
    link(ckpt, 2, decode, 'vae')
    const save = add('SaveImage', [1200, 0])
    link(decode, 0, save, 'images')
    set(save, 'filename_prefix', 'grouped')
    app.canvas.deselectAll()
    app.canvas.selectNodes([positive, negative, sampler, decode])
    return [positive, negative, sampler, decode].map((n) => n.id)
  }

  // After the conversion: a second instance with other values, and a bypassed third one.
  cases.group_node_more = async () => {
    const ckpt = app.graph.nodes.find((n) => n.type === 'CheckpointLoaderSimple')
    const latent = app.graph.nodes.find((n) => n.type === 'EmptyLatentImage')
    for (const [seed, mode] of [[99, 0], [5, 4]]) {
      const group = add('workflow>sampler_block', [300, 800])
      link(ckpt, 1, group, 'clip')
      link(ckpt, 1, group, 'CLIPTextEncode clip')
      link(ckpt, 0, group, 'model')
      link(latent, 0, group, 'latent_image')
      link(ckpt, 2, group, 'vae')
      set(group, 'seed', seed)
      set(group, 'text', `instance ${seed}`)
      group.mode = mode
      const save = add('SaveImage', [900, 800])
      link(group, 0, save, 'images')
    }
  }

  window.__uiReferenceCases = cases
})()
