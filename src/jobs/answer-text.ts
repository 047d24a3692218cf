/** Bytes of UTF-8 an answer may still take (MAX_OUTPUT_BYTES); cuts at a character boundary. */
export class AnswerBudget {
  #left: number
  #exhausted = false

  constructor (bytes: number) {
    this.#left = bytes
  }

  get exhausted (): boolean {
    return this.#exhausted
  }

  take (text: string): string {
    if (this.#exhausted) return ''
    const bytes = Buffer.byteLength(text)
    if (bytes <= this.#left) {
      this.#left -= bytes
      return text
    }
    const encoded = Buffer.from(text)
    let end = this.#left
    // Never split a UTF-8 sequence: back up to the start of the character.
    while (end > 0 && (encoded[end]! & 0xc0) === 0x80) end--
    this.#left = 0
    this.#exhausted = true
    return encoded.subarray(0, end).toString('utf8')
  }
}

/**
 * A chat's answer as its caller assembles it: the main agent's text blocks joined by a blank
 * line, cut at the budget. The same text blocks give the same answer wherever it is assembled
 * (the caller following the events, the replica running the agent).
 */
export class AnswerText {
  readonly #budget: AnswerBudget
  #text = ''
  #blocks = 0

  constructor (maxBytes: number) {
    this.#budget = new AnswerBudget(maxBytes)
  }

  get text (): string {
    return this.#text
  }

  /** True once the answer reached the budget: it was cut there. */
  get exhausted (): boolean {
    return this.#budget.exhausted
  }

  add (block: string): void {
    if (this.#budget.exhausted) return
    this.#text += this.#budget.take(this.#blocks++ === 0 ? block : `\n\n${block}`)
  }

  /** Bounds a text that is the whole answer (the CLI's result, when there were no text blocks). */
  bound (text: string): string {
    return this.#budget.take(text)
  }
}
