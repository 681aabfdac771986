package clientapi

import "sync"

// latest remembers the newest stream position of each user's account data
// and each device's to-device messages, and how far each device's
// delivered messages were deleted, so that /sync — woken for every room
// message — skips the queries that would find nothing. Everything written
// before this process started counts as at boot, the stream position at
// start: the first sync of each user after a restart queries once.
type latest struct {
	boot int64

	mu          sync.Mutex
	accountData map[string]int64 // user → newest position
	toDevice    map[string]int64 // "user|device" → newest position
	deleted     map[string]int64 // "user|device" → deleted up to
	deviceList  int64            // newest device list change, anyone's
}

func newLatest(boot int64) *latest {
	return &latest{boot: boot, accountData: map[string]int64{}, toDevice: map[string]int64{}, deleted: map[string]int64{}}
}

func (l *latest) putAccountData(user string, pos int64) {
	l.mu.Lock()
	l.accountData[user] = max(l.accountData[user], pos)
	l.mu.Unlock()
}

func (l *latest) putToDevice(dev string, pos int64) {
	l.mu.Lock()
	l.toDevice[dev] = max(l.toDevice[dev], pos)
	l.mu.Unlock()
}

// accountDataAfter reports whether the user may have account data newer
// than pos.
func (l *latest) accountDataAfter(user string, pos int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.boot, l.accountData[user]) > pos
}

// toDeviceAfter reports whether the device may have messages newer than
// pos.
func (l *latest) toDeviceAfter(dev string, pos int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.boot, l.toDevice[dev]) > pos
}

// mayDelete reports whether messages up to pos may still be stored: some
// were written after the last deletion, which ended before pos.
func (l *latest) mayDelete(dev string, pos int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.deleted[dev]
	return pos > d && max(l.boot, l.toDevice[dev]) > d
}

func (l *latest) markDeleted(dev string, pos int64) {
	l.mu.Lock()
	l.deleted[dev] = max(l.deleted[dev], pos)
	l.mu.Unlock()
}

func (l *latest) putDeviceList(pos int64) {
	l.mu.Lock()
	l.deviceList = max(l.deviceList, pos)
	l.mu.Unlock()
}

// deviceListAfter reports whether any device list may have changed after
// pos.
func (l *latest) deviceListAfter(pos int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.boot, l.deviceList) > pos
}
