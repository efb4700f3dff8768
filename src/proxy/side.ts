/**
 * One TCP connection of a proxied pair (the client's or the backend's), as connection.ts
 * drives it. The names are net.Socket's, so a net.Socket is a Side as it is (the socket
 * path, socket-path.ts); handle-side.ts implements the same on bare libuv handles.
 *
 * What a Side reports goes to its Connection's event methods (clientEnded, backendFailed,
 * ...), as net.Socket's 'end', 'error', 'close', 'drain' and 'connect' events would.
 */
export interface Side {
  /** Queues `data`; false once the queue is past its high-water mark ('drain' follows). */
  write(data: Buffer): boolean;
  /** Sends a FIN once the queued bytes are out (shutdown(2)). */
  end(): void;
  /**
   * Closes at once, dropping what is queued; the connection hears of it (clientClosed,
   * backendClosed) at once on a libuv handle, on 'close' for a net.Socket.
   */
  destroy(): void;
  /** Closes with a RST (SO_LINGER 0), as destroy() otherwise. */
  resetAndDestroy(): void;
  /** Stops and starts reading. */
  pause(): void;
  resume(): void;
  /** Bytes queued and not yet taken by the kernel. */
  readonly writableLength: number;
  /** The peer's FIN has been read. */
  readonly readableEnded: boolean;
  /** destroy() or resetAndDestroy() has been called, or the connection failed. */
  readonly destroyed: boolean;
  readonly bytesRead: number;
  readonly bytesWritten: number;
}
