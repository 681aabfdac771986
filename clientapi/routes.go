package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"
)

// routes registers every client-server route.
func (s *Server) routes(r *mux.Router) {
	const auth, open = true, false

	r.HandleFunc("/_matrix/client/versions", s.handleVersions).Methods(http.MethodGet)
	r.HandleFunc("/.well-known/matrix/client", s.handleWellKnown).Methods(http.MethodGet)
	r.HandleFunc("/_synapse/admin/v1/register", s.handleSharedSecretNonce).Methods(http.MethodGet)
	r.HandleFunc("/_synapse/admin/v1/register", s.handleSharedSecretRegister).Methods(http.MethodPost)

	// Accounts and devices.
	s.handle(r, "GET", "/login", open, s.handleLoginFlows)
	s.handle(r, "POST", "/login", open, s.handleLogin)
	s.handle(r, "GET", "/login/sso/redirect", open, s.handleSSORedirect)
	s.handle(r, "GET", "/login/sso/redirect/{idpId}", open, s.handleSSORedirect)
	r.HandleFunc(ssoPagePath, s.handleSSOPage).Methods(http.MethodGet, http.MethodPost)
	s.handle(r, "POST", "/logout", auth, s.handleLogout)
	s.handle(r, "POST", "/logout/all", auth, s.handleLogoutAll)
	s.handle(r, "POST", "/register", open, s.handleRegister)
	s.handle(r, "GET", "/register/available", open, s.handleRegisterAvailable)
	s.handle(r, "GET", "/account/whoami", auth, s.handleWhoami)
	s.handle(r, "POST", "/account/password", auth, s.handlePassword)
	s.handle(r, "POST", "/account/deactivate", auth, s.handleDeactivate)
	s.handle(r, "GET", "/devices", auth, s.handleDevices)
	s.handle(r, "GET", "/devices/{deviceId}", auth, s.handleGetDevice)
	s.handle(r, "PUT", "/devices/{deviceId}", auth, s.handlePutDevice)
	s.handle(r, "DELETE", "/devices/{deviceId}", auth, s.handleDeleteDevice)
	s.handle(r, "POST", "/delete_devices", auth, s.handleDeleteDevices)
	s.handle(r, "GET", "/capabilities", auth, s.handleCapabilities)
	s.handle(r, "GET", "/account/3pid", auth, s.handleGet3PIDs)
	s.handle(r, "POST", "/account/3pid/add", auth, s.handleAdd3PID)
	s.handle(r, "POST", "/account/3pid/bind", auth, s.handleAdd3PID)
	s.handle(r, "POST", "/account/3pid/delete", auth, s.handleRemove3PID)
	s.handle(r, "POST", "/account/3pid/unbind", auth, s.handleRemove3PID)
	for _, medium := range []string{"email", "msisdn"} {
		s.handle(r, "POST", "/account/3pid/"+medium+"/requestToken", auth, s.handleRequestToken(true))
		s.handle(r, "POST", "/account/password/"+medium+"/requestToken", open, s.handleRequestToken(false))
		s.handle(r, "POST", "/register/"+medium+"/requestToken", open, s.handleRequestToken(false))
	}

	// Rooms.
	s.handle(r, "POST", "/createRoom", auth, s.handleCreateRoom)
	s.handle(r, "POST", "/join/{roomIdOrAlias}", auth, s.handleJoin)
	s.handle(r, "POST", "/rooms/{roomId}/join", auth, s.handleJoin)
	s.handle(r, "POST", "/knock/{roomIdOrAlias}", auth, s.handleKnock)
	for _, action := range []string{"invite", "kick", "ban", "unban", "leave"} {
		s.handle(r, "POST", "/rooms/{roomId}/"+action, auth, s.handleMembership(action))
	}
	s.handle(r, "POST", "/rooms/{roomId}/forget", auth, s.handleForget)
	s.handle(r, "POST", "/rooms/{roomId}/upgrade", auth, s.handleUpgrade)
	s.handle(r, "GET", "/joined_rooms", auth, s.handleJoinedRooms)
	for _, method := range []string{"GET", "PUT", "DELETE"} {
		s.handle(r, method, "/pushrules/{path:.*}", auth, s.handlePushRules)
	}
	s.handle(r, "GET", "/pushers", auth, s.handleGetPushers)
	s.handle(r, "POST", "/pushers/set", auth, s.handleSetPusher)
	s.handle(r, "GET", "/notifications", auth, s.handleNotifications)
	s.handle(r, "PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", auth, s.handleSend)
	// Without a transaction ID (early clients, SyTest): each call is a new
	// event, as the spec's PUT forms make a retry not.
	s.handle(r, "POST", "/rooms/{roomId}/send/{eventType}", auth, s.handleSend)
	s.handle(r, "GET", "/rooms/{roomId}/state", auth, s.handleState)
	s.handle(r, "GET", "/rooms/{roomId}/state/{eventType}", auth, s.handleGetState)
	s.handle(r, "GET", "/rooms/{roomId}/state/{eventType}/", auth, s.handleGetState)
	s.handle(r, "GET", "/rooms/{roomId}/state/{eventType}/{stateKey}", auth, s.handleGetState)
	s.handle(r, "PUT", "/rooms/{roomId}/state/{eventType}", auth, s.handlePutState)
	s.handle(r, "PUT", "/rooms/{roomId}/state/{eventType}/", auth, s.handlePutState)
	s.handle(r, "PUT", "/rooms/{roomId}/state/{eventType}/{stateKey}", auth, s.handlePutState)
	s.handle(r, "PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", auth, s.handleRedact)
	s.handle(r, "POST", "/rooms/{roomId}/redact/{eventId}", auth, s.handleRedact)
	s.handle(r, "GET", "/rooms/{roomId}/event/{eventId}", auth, s.handleEvent)
	s.handle(r, "GET", "/rooms/{roomId}/members", auth, s.handleMembers)
	s.handle(r, "GET", "/rooms/{roomId}/joined_members", auth, s.handleJoinedMembers)
	s.handle(r, "GET", "/rooms/{roomId}/messages", auth, s.handleMessages)
	s.handle(r, "GET", "/rooms/{roomId}/context/{eventId}", auth, s.handleContext)
	s.handle(r, "GET", "/rooms/{roomId}/aliases", auth, s.handleRoomAliases)
	s.handle(r, "POST", "/rooms/{roomId}/report", auth, s.handleReportRoom)
	s.handle(r, "POST", "/rooms/{roomId}/report/{eventId}", auth, s.handleReportEvent)
	s.handle(r, "GET", "/directory/room/{roomAlias}", open, s.handleDirectory)
	s.handle(r, "PUT", "/directory/room/{roomAlias}", auth, s.handleDirectory)
	s.handle(r, "DELETE", "/directory/room/{roomAlias}", auth, s.handleDirectory)
	s.handle(r, "GET", "/directory/list/room/{roomId}", open, s.handleGetRoomVisibility)
	s.handle(r, "PUT", "/directory/list/room/{roomId}", auth, s.handlePutRoomVisibility)
	s.handle(r, "GET", "/publicRooms", open, s.handlePublicRooms)
	s.handle(r, "POST", "/publicRooms", auth, s.handlePublicRooms)

	// Finding people, bridges and calls.
	s.handle(r, "POST", "/user_directory/search", auth, s.handleUserSearch)
	s.handle(r, "GET", "/thirdparty/protocols", auth, s.handleThirdPartyProtocols)
	s.handle(r, "GET", "/thirdparty/protocol/{protocol}", auth, s.handleThirdPartyProtocol)
	s.handle(r, "GET", "/thirdparty/location/{protocol}", auth, s.handleThirdPartyProtocol)
	s.handle(r, "GET", "/thirdparty/user/{protocol}", auth, s.handleThirdPartyProtocol)
	s.handle(r, "GET", "/thirdparty/location", auth, s.handleThirdPartyLocation)
	s.handle(r, "GET", "/thirdparty/user", auth, s.handleThirdPartyUser)
	s.handle(r, "GET", "/voip/turnServer", auth, s.handleTURNServer)

	// Client API v1 only.
	for _, v1 := range []struct {
		path string
		h    http.HandlerFunc
	}{
		{"/rooms/{roomId}/hierarchy", s.handleHierarchy},
		{"/rooms/{roomId}/timestamp_to_event", s.handleTimestampToEvent},
	} {
		r.Handle("/_matrix/client/v1"+v1.path, s.requireAuth(v1.h)).Methods(http.MethodGet)
	}

	if s.search != nil {
		s.handle(r, "POST", "/search", auth, s.handleSearch)
	}

	// Sync and what it carries.
	s.handle(r, "GET", "/sync", auth, s.handleSync)
	// Deprecated, and still called (legacy.go).
	s.handle(r, "GET", "/events", auth, s.handleEvents)
	s.handle(r, "GET", "/events/{eventId}", auth, s.handleEventByID)
	s.handle(r, "GET", "/initialSync", auth, s.handleInitialSync)
	s.handle(r, "GET", "/rooms/{roomId}/initialSync", auth, s.handleRoomInitialSync)
	s.handle(r, "POST", "/user/{userId}/filter", auth, s.handlePostFilter)
	s.handle(r, "POST", "/user/{userId}/openid/request_token", auth, s.handleOpenIDRequestToken)
	// Integration managers may ask this on the client listener too.
	r.HandleFunc("/_matrix/federation/v1/openid/userinfo", s.openID().ServeUserInfo).Methods(http.MethodGet)
	s.handle(r, "GET", "/user/{userId}/filter/{filterId}", auth, s.handleGetFilter)
	s.handle(r, "GET", "/user/{userId}/account_data/{type}", auth, s.handleGetAccountData)
	s.handle(r, "PUT", "/user/{userId}/account_data/{type}", auth, s.handlePutAccountData)
	s.handle(r, "GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", auth, s.handleGetAccountData)
	s.handle(r, "PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", auth, s.handlePutAccountData)
	s.handle(r, "GET", "/user/{userId}/rooms/{roomId}/tags", auth, s.handleGetTags)
	s.handle(r, "PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", auth, s.handlePutTag)
	s.handle(r, "DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", auth, s.handleDeleteTag)
	s.handle(r, "PUT", "/rooms/{roomId}/typing/{userId}", auth, s.handleTyping)
	s.handle(r, "POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", auth, s.handleReceipt)
	s.handle(r, "POST", "/rooms/{roomId}/read_markers", auth, s.handleReadMarkers)
	s.handle(r, "PUT", "/sendToDevice/{eventType}/{txnId}", auth, s.handleSendToDevice)
	s.handle(r, "GET", "/presence/{userId}/status", auth, s.handleGetPresence)
	s.handle(r, "PUT", "/presence/{userId}/status", auth, s.handlePutPresence)

	// End-to-end encryption keys.
	s.handle(r, "POST", "/keys/upload", auth, s.handleKeysUpload)
	s.handle(r, "POST", "/keys/query", auth, s.handleKeysQuery)
	s.handle(r, "POST", "/keys/claim", auth, s.handleKeysClaim)
	s.handle(r, "GET", "/keys/changes", auth, s.handleKeysChanges)
	// Cross-signing came to clients (and SyTest) under /unstable before
	// it was in a spec release (MSC1756); some still call it there.
	s.handle(r, "POST", "/keys/device_signing/upload", auth, s.handleDeviceSigningUpload, "/_matrix/client/unstable")
	s.handle(r, "POST", "/keys/signatures/upload", auth, s.handleSignaturesUpload, "/_matrix/client/unstable")

	// Server-side room key backups.
	s.handle(r, "POST", "/room_keys/version", auth, s.handleCreateBackupVersion)
	s.handle(r, "GET", "/room_keys/version", auth, s.handleGetBackupVersion)
	s.handle(r, "GET", "/room_keys/version/{version}", auth, s.handleGetBackupVersion)
	s.handle(r, "PUT", "/room_keys/version/{version}", auth, s.handlePutBackupVersion)
	s.handle(r, "DELETE", "/room_keys/version/{version}", auth, s.handleDeleteBackupVersion)
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		s.handle(r, "GET", p, auth, s.handleGetBackupKeys)
		s.handle(r, "PUT", p, auth, s.handlePutBackupKeys)
		s.handle(r, "DELETE", p, auth, s.handleDeleteBackupKeys)
	}

	// Profiles.
	s.handle(r, "GET", "/profile/{userId}", open, s.handleGetProfile)
	s.handle(r, "GET", "/profile/{userId}/{field}", open, s.handleGetProfile)
	s.handle(r, "PUT", "/profile/{userId}/{field}", auth, s.handlePutProfile)
}
