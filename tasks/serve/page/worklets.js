// Audio worklets of the talk page: 'capture' hands the microphone's samples to the page in blocks,
// 'player' plays the answer's chunks back to back from a queue, so consecutive chunks leave no gap.

class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}

class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.played = 0;
    // 'flush' (the user barged in): what is queued is dropped, counted as played so totals stay in step
    this.port.onmessage = (event) => (event.data === 'flush' ? this.flush() : this.queue.push(event.data));
  }

  flush() {
    for (const chunk of this.queue) this.played += chunk.length;
    this.played -= this.offset;
    this.queue = [];
    this.offset = 0;
    this.port.postMessage({played: this.played, queued: 0});
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    while (written < out.length && this.queue.length) {
      const chunk = this.queue[0];
      const n = Math.min(out.length - written, chunk.length - this.offset);
      out.set(chunk.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      if (this.offset === chunk.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, written);
    if (written) {
      this.played += written;
      this.port.postMessage({played: this.played, queued: this.queue.length});
    }
    return true;
  }
}

registerProcessor('capture', Capture);
registerProcessor('player', Player);
